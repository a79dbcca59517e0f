//! Workloads: what runs on the simulated [`World`] — the client requests, what the answers
//! promise, and the checkers of those promises. [`Workload`] is the plug-in interface; the
//! replicated-log workload ([`crate::replicated_log`]) and the bank ([`crate::bank`]) are the
//! plug-ins, and the replicated log's client ([`Client`]) is below.
//!
//! # The client
//!
//! Unique commands sent to each group's leader, through its host.
//!
//! The client guesses a leader per group, follows `NotLeader` hints, and keeps a few requests
//! in flight per group. A command is **acknowledged** only when the host it was sent to
//! answers that it is applied at an index (the host matched the applied entry to the request
//! by index and term; the acked-not-lost checker then compares the entry applied at that
//! index with the command). Anything else — the node crashed, leadership changed before the
//! entry applied (`Unknown`), the deadline passed — leaves the outcome unknown, and an unknown
//! outcome is never counted as acknowledged (nor as failed).
//!
//! Groups are of two kinds: command logs (append unique bytes) and registers (write unique
//! values): the two machines one simulated host runs side by side.

use std::collections::BTreeMap;

use decree_host::machines::{ToyRequest, ToyResponse};
use decree_host::ReplicatedMachine;
use decree_raft::EntryPayload;
use decree_types::{DetRng, GroupId, LogIndex, NodeId};

use crate::check::{command_digest, Violation};
use crate::replicated_log::{SimRequest, SimResponse};
use crate::world::{CrashCut, Iteration, MachineFactory, Note, World};

/// A workload plug-in: the machines the world's hosts run, the client that talks to them,
/// and the checkers of what the answers promise. The world runs the Raft-level checkers
/// itself; it asks the workload only how to identify an entry and a snapshot's contents.
pub trait Workload {
    /// The machine every host runs (one value per group; several kinds through
    /// [`decree_host::Either`]).
    type Machine: ReplicatedMachine;

    /// Makes a fresh machine for a group of the world, each time a node starts.
    fn machines(&self) -> MachineFactory<Self::Machine>;

    /// The world started: the workload may set its timers ([`World::schedule_wake`]).
    fn start(&mut self, _world: &mut World<Self::Machine>) -> Result<(), Violation> {
        Ok(())
    }

    /// Node `node` finished an iteration whose output has not left yet: the workload may
    /// crash it right there ([`CrashCut`]), and check what it is about to send.
    fn on_iteration(
        &mut self,
        _world: &World<Self::Machine>,
        _node: usize,
        _iteration: &Iteration<Self::Machine>,
    ) -> Result<Option<CrashCut>, Violation> {
        Ok(None)
    }

    /// The identity of a log entry's payload (0 for a no-op), for the Raft-level checkers.
    fn entry_digest(payload: &EntryPayload) -> u64;

    /// The `(index, digest)` of every command an encoded snapshot holds.
    fn snapshot_contents(data: &[u8]) -> Result<Vec<(LogIndex, u64)>, String>;

    /// Something happened in the world (see [`Note`]).
    fn on_note(
        &mut self,
        world: &mut World<Self::Machine>,
        note: Note<Self::Machine>,
    ) -> Result<(), Violation>;

    /// While healing: the index every replica of `group` must reach, once known.
    fn heal_target(&self, world: &World<Self::Machine>, group: GroupId) -> Option<LogIndex>;

    /// While healing, once the world converged: are the answers the workload waits for in
    /// (`Err` says which is missing)? The world waits for this before it moves leaderships,
    /// and fails the run with it when the healing bound passed.
    fn heal_settled(&self, world: &World<Self::Machine>) -> Result<(), Violation>;

    /// End of run: what the answers promised holds on every replica.
    fn final_checks(&self, world: &World<Self::Machine>) -> Result<(), Violation>;

    /// Writes acknowledged.
    fn acked(&self) -> usize;

    /// Reads served and checked.
    fn reads(&self) -> usize;
}

/// Requests a client keeps in flight per group.
pub const INFLIGHT_PER_GROUP_MAX: usize = 4;
/// A request whose outcome is unknown after this long is forgotten, in ns.
pub const PROPOSAL_TIMEOUT_NS: u64 = 5_000_000_000;

/// The kind of a group's machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKind {
    /// A [`decree_host::machines::CommandLog`].
    Log,
    /// A [`decree_host::machines::Register`].
    Register,
}

/// A command waiting for its outcome.
#[derive(Clone, Debug)]
struct Inflight {
    group: GroupId,
    node: usize,
    command: u64,
    digest: u64,
    sent_at_ns: u64,
}

/// An acknowledgement: `command` is applied at `index` of `group`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The group.
    pub group: GroupId,
    /// Where the command is.
    pub index: LogIndex,
    /// The command id.
    pub command: u64,
    /// Its [`command_digest`].
    pub digest: u64,
    /// When it was sent (global ns).
    pub proposed_at_ns: u64,
}

/// What became of a request, as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A command is applied.
    Ack(Ack),
    /// A read was served at `read_index`.
    Read {
        /// The read index.
        read_index: LogIndex,
    },
    /// Redirected, refused or unknown.
    Other,
}

/// The simulated client.
#[derive(Debug)]
pub struct Client {
    nodes: usize,
    next_command: u64,
    rng: DetRng,
    kinds: BTreeMap<GroupId, GroupKind>,
    /// Per group: the node believed to lead it (index into the node list).
    target: BTreeMap<GroupId, usize>,
    /// Waiting commands, by tag (the command id).
    inflight: BTreeMap<u64, Inflight>,
    /// Waiting reads, by tag: group and node.
    reads: BTreeMap<u64, (GroupId, usize)>,
    next_read: u64,
}

/// A request the client wants to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// To which group.
    pub group: GroupId,
    /// Through which node (index into the node list).
    pub node: usize,
    /// The tag its answer comes back with (the command id).
    pub command: u64,
    /// The request.
    pub request: SimRequest,
}

/// Tags of reads have this bit set; commands' tags are their ids.
pub const READ_TAG: u64 = 1 << 63;

impl Client {
    /// A client of `nodes` nodes hosting `groups`.
    pub fn new(nodes: usize, groups: &[(GroupId, GroupKind)], mut rng: DetRng) -> Self {
        let target =
            groups.iter().map(|&(g, _)| (g, rng.range(0, nodes as u64) as usize)).collect();
        Client {
            nodes,
            next_command: 1,
            rng,
            kinds: groups.iter().copied().collect(),
            target,
            inflight: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_read: 1,
        }
    }

    /// The next command to send, if some group has room in its window.
    pub fn next_proposal(&mut self) -> Option<Proposal> {
        let groups: Vec<GroupId> = self.target.keys().copied().collect();
        if groups.is_empty() {
            return None;
        }
        let group = groups[self.rng.range(0, groups.len() as u64) as usize];
        let inflight = self.inflight.values().filter(|p| p.group == group).count();
        if inflight >= INFLIGHT_PER_GROUP_MAX {
            return None;
        }
        let command = self.next_command;
        self.next_command += 1;
        let request = match self.kinds.get(&group) {
            Some(GroupKind::Register) => ToyRequest::Set(command),
            _ => {
                // Unique bytes of varying length: the command id, then filler.
                let mut payload = command.to_le_bytes().to_vec();
                payload.resize(8 + self.rng.range(0, 48) as usize, 0xab);
                ToyRequest::Append(payload)
            }
        };
        // `group` was drawn from `target`'s keys above.
        Some(Proposal { group, node: self.target[&group], command, request })
    }

    /// The request was handed to its node at `now_ns`.
    pub fn sent(&mut self, p: &Proposal, now_ns: u64) {
        let digest = match &p.request {
            ToyRequest::Append(bytes) => command_digest(bytes),
            ToyRequest::Set(v) => command_digest(&v.to_le_bytes()),
            _ => 0,
        };
        let inflight = Inflight {
            group: p.group,
            node: p.node,
            command: p.command,
            digest,
            sent_at_ns: now_ns,
        };
        self.inflight.insert(p.command, inflight);
    }

    /// A linearizable read of `group` to send to its believed leader: `(node, tag, request)`.
    pub fn next_read(&mut self, group: GroupId) -> Option<(usize, u64, SimRequest)> {
        let node = *self.target.get(&group).or_else(|| self.kinds.get(&group).map(|_| &0))?;
        let tag = READ_TAG | self.next_read;
        self.next_read += 1;
        self.reads.insert(tag, (group, node));
        let request = match self.kinds.get(&group) {
            Some(GroupKind::Register) => ToyRequest::Get,
            _ => ToyRequest::Read,
        };
        Some((node, tag, request))
    }

    /// The answer to request `tag`.
    pub fn answered(&mut self, tag: u64, response: &SimResponse) -> Answer {
        if tag & READ_TAG != 0 {
            let Some((group, node)) = self.reads.remove(&tag) else { return Answer::Other };
            return match response {
                ToyResponse::Contents { read_index, .. }
                | ToyResponse::Value { read_index, .. } => Answer::Read { read_index: *read_index },
                other => {
                    self.follow(group, node, leader_of(other));
                    Answer::Other
                }
            };
        }
        let Some(p) = self.inflight.remove(&tag) else { return Answer::Other };
        match response {
            ToyResponse::Appended { index, .. } | ToyResponse::Written { index } => {
                Answer::Ack(Ack {
                    group: p.group,
                    index: *index,
                    command: p.command,
                    digest: p.digest,
                    proposed_at_ns: p.sent_at_ns,
                })
            }
            // Unknown outcome: never acknowledged.
            ToyResponse::Unknown => Answer::Other,
            other => {
                self.follow(p.group, p.node, leader_of(other));
                Answer::Other
            }
        }
    }

    /// The host refused request `tag` without asking a machine; `busy`: the node is right
    /// but overloaded.
    pub fn refused(&mut self, tag: u64, busy: bool) {
        let (group, node) = if tag & READ_TAG != 0 {
            match self.reads.remove(&tag) {
                Some(r) => r,
                None => return,
            }
        } else {
            match self.inflight.remove(&tag) {
                Some(p) => (p.group, p.node),
                None => return,
            }
        };
        if busy {
            return;
        }
        self.follow(group, node, None);
    }

    /// Aims `group` at `leader`, or at the next node after `node` if none is known.
    fn follow(&mut self, group: GroupId, node: usize, leader: Option<NodeId>) {
        let next = leader.map_or(usize::MAX, |l| (l.0 as usize).wrapping_sub(1));
        let next = if next < self.nodes { next } else { (node + 1) % self.nodes };
        if let Some(t) = self.target.get_mut(&group) {
            *t = next;
        }
    }

    /// The node is down: every request waiting on it has an unknown outcome.
    pub fn node_down(&mut self, node: usize) {
        self.inflight.retain(|_, p| p.node != node);
        self.reads.retain(|_, r| r.1 != node);
    }

    /// Forgets requests older than [`PROPOSAL_TIMEOUT_NS`].
    pub fn expire(&mut self, now_ns: u64) {
        self.inflight.retain(|_, p| now_ns.saturating_sub(p.sent_at_ns) < PROPOSAL_TIMEOUT_NS);
    }

    /// Stops proposing to `group` (the healing phase quiesces a group once it made progress,
    /// so that every replica can catch up with a log that no longer grows).
    pub fn retire(&mut self, group: GroupId) {
        self.target.remove(&group);
    }

    /// A leader was observed: aim there.
    pub fn leader_seen(&mut self, group: GroupId, leader: NodeId) {
        if let Some(t) = self.target.get_mut(&group) {
            *t = (leader.0 as usize).wrapping_sub(1).min(self.nodes - 1);
        }
    }
}

/// The leader a redirect names, if any.
fn leader_of(response: &SimResponse) -> Option<NodeId> {
    match response {
        ToyResponse::NotLeader { leader } => *leader,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use decree_types::Term;

    #[test]
    fn an_ack_needs_an_applied_answer_for_the_same_tag() {
        let g = GroupId(1);
        let mut c = Client::new(3, &[(g, GroupKind::Log)], DetRng::new(1));
        let p = c.next_proposal().unwrap();
        c.sent(&p, 0);
        assert_eq!(c.answered(p.command, &ToyResponse::Unknown), Answer::Other);
        // Answered once: a duplicate answer is nobody's.
        let appended = ToyResponse::Appended { index: LogIndex(5), term: Term(2) };
        assert_eq!(c.answered(p.command, &appended), Answer::Other);
        let p = c.next_proposal().unwrap();
        c.sent(&p, 0);
        let Answer::Ack(ack) = c.answered(p.command, &appended) else { panic!("acked") };
        assert_eq!((ack.group, ack.index, ack.command), (g, LogIndex(5), p.command));
        let ToyRequest::Append(bytes) = &p.request else { panic!("an append") };
        assert_eq!(ack.digest, command_digest(bytes));
    }

    #[test]
    fn redirects_follow_hints_and_rotate_without_one() {
        let g = GroupId(1);
        let mut c = Client::new(3, &[(g, GroupKind::Log)], DetRng::new(2));
        let p = c.next_proposal().unwrap();
        c.sent(&p, 0);
        let hint = ToyResponse::NotLeader { leader: Some(NodeId(3)) };
        c.answered(p.command, &hint);
        let p = c.next_proposal().unwrap();
        assert_eq!(p.node, 2);
        c.sent(&p, 0);
        c.answered(p.command, &ToyResponse::NotLeader { leader: None });
        assert_eq!(c.next_proposal().unwrap().node, 0);
    }
}
