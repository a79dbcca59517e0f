//! The client workload: unique commands proposed to each group's leader.
//!
//! The client guesses a leader per group, follows `NotLeader` hints, and keeps a few proposals
//! in flight per group. A proposal is **acknowledged** only when the node it was proposed to
//! reports, through an [`Output::Apply`](decree_raft::node::Output::Apply), that the entry at
//! the returned index is applied *and* carries this command. Anything else — the node crashed,
//! a new leader overwrote the index, the deadline passed — leaves the outcome unknown, and an
//! unknown outcome is never counted as acknowledged (nor as failed).

use std::collections::BTreeMap;

use decree_raft::node::ProposeError;
use decree_raft::{Entry, EntryPayload};
use decree_types::{DetRng, GroupId, LogIndex, NodeId};

/// Proposals a client keeps in flight per group.
pub const INFLIGHT_PER_GROUP_MAX: usize = 4;
/// A proposal whose outcome is unknown after this long is forgotten, in ns.
pub const PROPOSAL_TIMEOUT_NS: u64 = 5_000_000_000;

/// A proposal waiting for its outcome.
#[derive(Clone, Debug)]
struct Inflight {
    command: u64,
    payload: Vec<u8>,
    proposed_at_ns: u64,
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
    /// Its payload bytes.
    pub payload: Vec<u8>,
    /// When it was proposed (global ns).
    pub proposed_at_ns: u64,
}

/// The simulated client.
#[derive(Debug)]
pub struct Client {
    nodes: usize,
    next_command: u64,
    rng: DetRng,
    /// Per group: the node believed to lead it (index into the node list).
    target: BTreeMap<GroupId, usize>,
    /// Waiting proposals, by (node, group, index).
    inflight: BTreeMap<(NodeId, GroupId, LogIndex), Inflight>,
}

/// What the client wants to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// To which group.
    pub group: GroupId,
    /// Through which node (index into the node list).
    pub node: usize,
    /// The command id.
    pub command: u64,
    /// Its bytes.
    pub payload: Vec<u8>,
}

impl Client {
    /// A client of `nodes` nodes hosting `groups`.
    pub fn new(nodes: usize, groups: &[GroupId], mut rng: DetRng) -> Self {
        let target = groups.iter().map(|&g| (g, rng.range(0, nodes as u64) as usize)).collect();
        Client { nodes, next_command: 1, rng, target, inflight: BTreeMap::new() }
    }

    /// The next proposal to make, if some group has room in its window.
    pub fn next_proposal(&mut self) -> Option<Proposal> {
        let groups: Vec<GroupId> = self.target.keys().copied().collect();
        if groups.is_empty() {
            return None;
        }
        let group = groups[self.rng.range(0, groups.len() as u64) as usize];
        let inflight = self.inflight.keys().filter(|k| k.1 == group).count();
        if inflight >= INFLIGHT_PER_GROUP_MAX {
            return None;
        }
        let command = self.next_command;
        self.next_command += 1;
        // Unique bytes of varying length: the command id, then filler.
        let mut payload = command.to_le_bytes().to_vec();
        payload.resize(8 + self.rng.range(0, 48) as usize, 0xab);
        // `group` was drawn from `target`'s keys above.
        Some(Proposal { group, node: self.target[&group], command, payload })
    }

    /// The node accepted the proposal at `index`.
    pub fn accepted(&mut self, p: Proposal, node: NodeId, index: LogIndex, now_ns: u64) {
        let inflight = Inflight { command: p.command, payload: p.payload, proposed_at_ns: now_ns };
        // A second proposal at the same (node, group, index) means the first was overwritten
        // by a new leader term on that node: its outcome is unknown, forget it.
        self.inflight.insert((node, p.group, index), inflight);
    }

    /// The node refused the proposal: follow the hint, or try another node.
    pub fn refused(&mut self, p: &Proposal, error: &ProposeError) {
        let next = match error {
            ProposeError::NotLeader { leader_hint: Some(l), .. }
            | ProposeError::TransferInProgress { target: l, .. } => (l.0 as usize).wrapping_sub(1),
            // The leader is right but busy: try it again later.
            ProposeError::Backpressure { .. } => p.node,
            _ => usize::MAX,
        };
        let next = if next < self.nodes { next } else { (p.node + 1) % self.nodes };
        self.target.insert(p.group, next);
    }

    /// The node is down: every proposal waiting on it has an unknown outcome.
    pub fn node_down(&mut self, node: NodeId) {
        self.inflight.retain(|k, _| k.0 != node);
    }

    /// `node` applied `entry` of `group`: an acknowledgement if it is one of ours at the
    /// index it was accepted at.
    pub fn applied(&mut self, node: NodeId, group: GroupId, entry: &Entry) -> Option<Ack> {
        let inflight = self.inflight.remove(&(node, group, entry.index))?;
        match &entry.payload {
            EntryPayload::Command(bytes) if *bytes == inflight.payload => Some(Ack {
                group,
                index: entry.index,
                command: inflight.command,
                payload: inflight.payload,
                proposed_at_ns: inflight.proposed_at_ns,
            }),
            // Overwritten by another leader's entry: unknown outcome, never acknowledged.
            _ => None,
        }
    }

    /// Forgets proposals older than [`PROPOSAL_TIMEOUT_NS`].
    pub fn expire(&mut self, now_ns: u64) {
        self.inflight.retain(|_, p| now_ns.saturating_sub(p.proposed_at_ns) < PROPOSAL_TIMEOUT_NS);
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

#[cfg(test)]
mod tests {
    use super::*;
    use decree_types::Term;

    #[test]
    fn ack_only_for_the_same_command_at_the_same_index_on_the_same_node() {
        let g = GroupId(1);
        let mut c = Client::new(3, &[g], DetRng::new(1));
        let p = c.next_proposal().unwrap();
        let payload = p.payload.clone();
        c.accepted(p, NodeId(1), LogIndex(5), 0);
        let other = Entry { term: Term(2), index: LogIndex(5), payload: EntryPayload::Noop };
        assert_eq!(c.applied(NodeId(2), g, &other), None, "another node: not ours to judge");
        assert_eq!(c.applied(NodeId(1), g, &other), None, "overwritten");
        let p = c.next_proposal().unwrap();
        let ours = Entry {
            term: Term(2),
            index: LogIndex(6),
            payload: EntryPayload::Command(p.payload.clone()),
        };
        c.accepted(p, NodeId(1), LogIndex(6), 0);
        assert!(c.applied(NodeId(1), g, &ours).is_some());
        assert_ne!(EntryPayload::Command(payload), ours.payload, "commands are unique");
    }

    #[test]
    fn refusals_follow_hints_and_rotate_without_one() {
        let g = GroupId(1);
        let mut c = Client::new(3, &[g], DetRng::new(2));
        let p = c.next_proposal().unwrap();
        c.refused(&p, &ProposeError::NotLeader { group: g, leader_hint: Some(NodeId(3)) });
        assert_eq!(c.next_proposal().unwrap().node, 2);
        let p = c.next_proposal().unwrap();
        c.refused(&p, &ProposeError::NotLeader { group: g, leader_hint: None });
        assert_eq!(c.next_proposal().unwrap().node, 0);
    }
}
