//! The first workload plug-in: replicated logs (and registers beside them).
//!
//! Every host runs [`SimMachine`]: command-log groups ([`CommandLog`]) and, if the run asks
//! for them, register groups ([`Register`]) on the same node and WAL. The client
//! ([`crate::workload::Client`]) appends unique commands, writes unique values and reads
//! linearizably; the checkers hold the host to what it answered:
//!
//! - `acked_not_lost`: an acknowledged command is the entry committed at its index, and every
//!   replica holds it at the end;
//! - `linearizable_reads`: a read observes every write acknowledged before it began (RAFT-3);
//! - `reads_resolve`: once healing converged, every read issued before the last two election
//!   timeouts (under steady load: before the heal) was served or failed (RAFT-3);
//! - after healing, each group acknowledges a command sent after the heal, and every replica
//!   reaches everything acknowledged (the world's liveness check, with this target).

use std::collections::BTreeMap;

use decree_host::either::snapshot_kind;
use decree_host::machines::{CommandLog, Register, ToyRequest, ToyResponse};
use decree_host::{ClientTag, Either, EitherCommand, HostEnvelope};
use decree_proto::ErrorResponse;
use decree_raft::EntryPayload;
use decree_types::{DetRng, GroupId, HlcTimestamp, LogIndex};

use crate::check::acked_not_lost::AckedNotLost;
use crate::check::linearizable_reads::LinearizableReads;
use crate::check::reads_resolve::ReadsResolve;
use crate::check::{command_digest, Violation};
use crate::trace::TraceEvent;
use crate::workload::{Answer, Client, GroupKind, Workload};
use crate::world::{MachineFactory, Note, Phase, World};

/// The machine every simulated host runs: command logs and registers side by side.
pub type SimMachine = Either<CommandLog, Register>;
/// A command in a simulated group's log.
pub type SimCommand = EitherCommand<Vec<u8>, u64>;
/// A request to a simulated group.
pub type SimRequest = ToyRequest;
/// An answer from a simulated group.
pub type SimResponse = ToyResponse;
/// What simulated hosts send each other.
pub type SimEnvelope = HostEnvelope<SimMachine>;

/// How often the client tries to send, in global ns (bounds).
const CLIENT_GAP_NS: (u64, u64) = (2_000_000, 40_000_000);

/// The replicated-log workload. See the module docs.
#[derive(Debug)]
pub struct ReplicatedLog {
    kinds: BTreeMap<GroupId, GroupKind>,
    client: Client,
    /// The client's HLC: the latest reading any answer carried.
    client_clock: HlcTimestamp,
    /// First acknowledgement per group of a command sent after the heal.
    probes: BTreeMap<GroupId, LogIndex>,
    steady_load: bool,
    acked: AckedNotLost,
    reads: LinearizableReads,
    /// Reads waiting for an answer (served or failed).
    unanswered: ReadsResolve,
}

impl ReplicatedLog {
    /// `log_groups` command logs then `register_groups` registers, for a client of `nodes`.
    pub fn new(
        nodes: usize,
        log_groups: usize,
        register_groups: usize,
        steady_load: bool,
        client_rng: DetRng,
    ) -> Self {
        let kinds: BTreeMap<GroupId, GroupKind> = (1..=(log_groups + register_groups) as u64)
            .map(|g| {
                let kind =
                    if g as usize > log_groups { GroupKind::Register } else { GroupKind::Log };
                (GroupId(g), kind)
            })
            .collect();
        let list: Vec<(GroupId, GroupKind)> = kinds.iter().map(|(&g, &k)| (g, k)).collect();
        ReplicatedLog {
            client: Client::new(nodes, &list, client_rng),
            kinds,
            client_clock: HlcTimestamp::ZERO,
            probes: BTreeMap::new(),
            steady_load,
            acked: AckedNotLost::default(),
            reads: LinearizableReads::default(),
            unanswered: ReadsResolve::default(),
        }
    }

    /// The groups, in order.
    pub fn groups(&self) -> Vec<GroupId> {
        self.kinds.keys().copied().collect()
    }

    fn client_step(&mut self, world: &mut World<SimMachine>) -> Result<(), Violation> {
        if world.phase() == Phase::Done {
            return Ok(());
        }
        let gap = world.sched_rng().range(CLIENT_GAP_NS.0, CLIENT_GAP_NS.1);
        world.schedule_client(world.now_ns() + gap);
        self.client.expire(world.now_ns());
        if world.sched_rng().chance(1, 4) {
            self.issue_read(world);
            return Ok(());
        }
        let Some(p) = self.client.next_proposal() else { return Ok(()) };
        let id = world.node_id(p.node);
        let ev = TraceEvent::Request { node: id, group: p.group, tag: p.command, read: false };
        world.record(&ev);
        self.client.sent(&p, world.now_ns());
        let tag = ClientTag(p.command);
        if !world.client_request(p.node, tag, self.client_clock, p.group, p.request) {
            self.client.refused(p.command, false);
        }
        Ok(())
    }

    /// A linearizable read (RAFT-3, ReadIndex) of a random group at the node the client
    /// believes leads it: the leader answers after a heartbeat round confirms it still leads.
    fn issue_read(&mut self, world: &mut World<SimMachine>) {
        let groups = world.groups();
        let group = groups[world.sched_rng().range(0, groups.len() as u64) as usize];
        let floor = self.acked.max_index(group);
        let Some((i, tag, request)) = self.client.next_read(group) else { return };
        let id = world.node_id(i);
        if world.host(i).is_none() {
            self.client.refused(tag, false);
            return;
        }
        self.reads.on_issue(tag, group, id, floor);
        self.unanswered.on_issue(tag, group, id, world.now_ns());
        world.record(&TraceEvent::Request { node: id, group, tag, read: true });
        world.client_request(i, ClientTag(tag), self.client_clock, group, request);
    }

    fn on_reply(
        &mut self,
        world: &mut World<SimMachine>,
        i: usize,
        tag: ClientTag,
        clock: HlcTimestamp,
        response: &SimResponse,
        applied: &[(GroupId, LogIndex)],
    ) -> Result<(), Violation> {
        self.client_clock = self.client_clock.max(clock);
        let id = world.node_id(i);
        self.unanswered.on_outcome(tag.0);
        match self.client.answered(tag.0, response) {
            Answer::Ack(ack) => {
                world.record(&TraceEvent::Reply { node: id, tag: tag.0, ok: true });
                let ev =
                    TraceEvent::Ack { group: ack.group, command: ack.command, index: ack.index };
                world.record(&ev);
                self.acked.on_ack(ack.group, ack.index, ack.digest, world.committed())?;
                if let Phase::Healing { since_ns } = world.phase() {
                    if ack.proposed_at_ns >= since_ns && !self.probes.contains_key(&ack.group) {
                        // Every replica must reach everything acknowledged so far.
                        let target = ack.index.max(self.acked.max_index(ack.group));
                        self.probes.insert(ack.group, target);
                        if !self.steady_load {
                            self.client.retire(ack.group);
                        }
                    }
                }
            }
            Answer::Read { read_index } => {
                world.record(&TraceEvent::Reply { node: id, tag: tag.0, ok: true });
                if let Some(group) = self.reads.group_of(tag.0) {
                    let applied =
                        applied.iter().find(|(g, _)| *g == group).map_or(LogIndex(0), |&(_, a)| a);
                    self.reads.on_served(tag.0, group, id, read_index, applied)?;
                }
            }
            Answer::Other => {
                world.record(&TraceEvent::Reply { node: id, tag: tag.0, ok: false });
                self.reads.forget(tag.0);
            }
        }
        Ok(())
    }
}

impl Workload for ReplicatedLog {
    type Machine = SimMachine;

    fn machines(&self) -> MachineFactory<SimMachine> {
        let kinds = self.kinds.clone();
        Box::new(move |g| match kinds.get(&g) {
            Some(GroupKind::Register) => Either::Right(Register::default()),
            _ => Either::Left(CommandLog::new()),
        })
    }

    fn entry_digest(payload: &EntryPayload) -> u64 {
        match payload {
            EntryPayload::Noop => 0,
            EntryPayload::Command(bytes) => {
                match postcard::from_bytes::<(HlcTimestamp, SimCommand)>(bytes) {
                    Ok((_, EitherCommand::Left(command))) => command_digest(&command),
                    Ok((_, EitherCommand::Right(value))) => command_digest(&value.to_le_bytes()),
                    // Not a host entry: the host stops on it; the checkers still compare it.
                    _ => command_digest(bytes),
                }
            }
        }
    }

    fn snapshot_contents(data: &[u8]) -> Result<Vec<(LogIndex, u64)>, String> {
        match snapshot_kind(data) {
            Some(Either::Left(body)) => {
                let log = CommandLog::decode_snapshot(body).map_err(|e| e.to_string())?;
                Ok(log.commands().iter().map(|(i, c)| (*i, command_digest(c))).collect())
            }
            // A register holds no commands the checkers can compare; its replicas are
            // compared by digest.
            Some(Either::Right(_)) => Ok(Vec::new()),
            None => Err("snapshot of an unknown kind".into()),
        }
    }

    fn on_note(
        &mut self,
        world: &mut World<SimMachine>,
        note: Note<SimMachine>,
    ) -> Result<(), Violation> {
        match note {
            Note::ClientDue => self.client_step(world),
            Note::Reply { node, tag, clock, response, applied } => {
                self.on_reply(world, node, tag, clock, &response, &applied)
            }
            Note::Refused { node, tag, clock, error } => {
                self.client_clock = self.client_clock.max(clock);
                let id = world.node_id(node);
                world.record(&TraceEvent::Reply { node: id, tag: tag.0, ok: false });
                self.client.refused(tag.0, matches!(error, ErrorResponse::Busy { .. }));
                self.reads.forget(tag.0);
                self.unanswered.on_outcome(tag.0);
                Ok(())
            }
            Note::LeaderSeen { group, leader } => {
                self.client.leader_seen(group, leader);
                Ok(())
            }
            Note::NodeDown(node) => {
                self.client.node_down(node);
                self.reads.node_down(world.node_id(node));
                self.unanswered.node_down(world.node_id(node));
                Ok(())
            }
            // The driver runs the heal check; this workload sets no timers and crashes
            // nothing.
            Note::HealCheckDue | Note::Applied { .. } | Note::Wake { .. } => Ok(()),
        }
    }

    fn heal_target(&self, _world: &World<SimMachine>, group: GroupId) -> Option<LogIndex> {
        // Quiesced, a group's acknowledgements stop growing and every replica must hold all
        // of them; under steady load the target is what was acknowledged at the probe.
        match self.probes.get(&group) {
            Some(&p) if self.steady_load => Some(p),
            Some(&p) => Some(p.max(self.acked.max_index(group))),
            None => None,
        }
    }

    fn heal_settled(&self, world: &World<SimMachine>) -> Result<(), Violation> {
        let Phase::Healing { since_ns } = world.phase() else { return Ok(()) };
        // RAFT-3: a read is served or failed within an election timeout of its leader's
        // trouble; two leave room for the answer. Under steady load a replica may stay
        // behind the head of the log, and a read it was given an index for waits until it
        // applied that far: there only the reads issued before the heal count.
        let bound_ns = if self.steady_load {
            world.now_ns() - since_ns
        } else {
            2 * world.election_timeout_max_ns()
        };
        self.unanswered.check(world.now_ns(), bound_ns)
    }

    fn final_checks(&self, world: &World<SimMachine>) -> Result<(), Violation> {
        for (_, host) in world.hosts() {
            for group in world.groups() {
                let (Some(applied), Some(Either::Left(log))) =
                    (host.applied(group), host.machine(group))
                else {
                    continue;
                };
                let contents: BTreeMap<LogIndex, u64> =
                    log.commands().iter().map(|(i, c)| (*i, command_digest(c))).collect();
                self.acked.check_replica(host.id(), group, applied, &contents)?;
            }
        }
        Ok(())
    }

    fn acked(&self) -> usize {
        self.acked.count()
    }

    fn reads(&self) -> usize {
        self.reads.served()
    }
}
