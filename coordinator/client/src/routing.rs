//! Where a request goes: the range map (key -> participant group), the coordinator groups,
//! and a cache of who leads each group.
//!
//! The cache is only a hint. Every reply that says otherwise (`Redirect`, `NotLeader{hint}`,
//! `UnknownGroup`, a node that does not answer) corrects it, and `KeyOutOfRange` makes the
//! client fetch the range map again. A group whose leader is unknown is tried replica by
//! replica.

use std::collections::BTreeMap;

use decree_proto::admin::RangeMapReply;
use decree_types::{GroupId, Key, KeyRange, NodeId, RangeMap, Term};

use crate::Error;

/// The coordinator group that decides a transaction: the wire contract's function, the one
/// every coordinator and participant uses.
pub use decree_proto::placement::coordinator_for;

/// What the client knows about one group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct GroupRoute {
    /// The leader last seen, if any.
    pub leader: Option<NodeId>,
    /// The term of that sighting (a hint from an older term does not replace a newer one).
    pub term: Term,
    /// Every replica, in the order the range map listed them.
    pub replicas: Vec<NodeId>,
}

/// The client's routing table.
#[derive(Clone, Debug, Default)]
pub(crate) struct Routes {
    /// Version of the range map held (0: none fetched yet).
    pub version: u64,
    /// Key -> participant group; `None` until known.
    pub map: Option<RangeMap>,
    /// The coordinator groups, ascending.
    pub coordinator_groups: Vec<GroupId>,
    /// Per-group leaders and replicas.
    pub groups: BTreeMap<GroupId, GroupRoute>,
    /// Nodes to ask for the range map when no coordinator replica is known (seeds).
    pub seeds: Vec<NodeId>,
}

impl Routes {
    /// A table knowing only where to ask.
    pub fn with_seeds(seeds: Vec<NodeId>) -> Routes {
        Routes { seeds, ..Routes::default() }
    }

    /// Installs a fetched range map, unless it is older than the one held. The coordinator
    /// groups are the reply's `coordinator_groups` (the replier's `coordinator_group` if the
    /// list is empty, as in a map built from a cluster file naming none).
    pub fn install(&mut self, reply: &RangeMapReply) -> Result<bool, Error> {
        if reply.version < self.version {
            return Ok(false);
        }
        let map = RangeMap::new(reply.ranges.clone())
            .map_err(|e| Error::protocol(format!("range map from the cluster is invalid: {e}")))?;
        let mut coordinator_groups = reply.coordinator_groups.clone();
        if coordinator_groups.is_empty() {
            coordinator_groups.push(reply.coordinator_group);
        }
        coordinator_groups.sort_unstable();
        coordinator_groups.dedup();
        for leader in &reply.leaders {
            let route = self.groups.entry(leader.group).or_default();
            route.replicas.clone_from(&leader.replicas);
            if leader.term >= route.term {
                route.term = leader.term;
                route.leader = leader.leader;
            }
        }
        self.version = reply.version;
        self.map = Some(map);
        self.coordinator_groups = coordinator_groups;
        Ok(true)
    }

    /// The group serving `key`, if the map is known.
    pub fn group_for(&self, key: &Key) -> Option<GroupId> {
        self.map.as_ref().map(|m| m.group_for(key))
    }

    /// The parts of `range` per group, in key order, if the map is known.
    pub fn split_range(&self, range: &KeyRange) -> Option<Vec<(KeyRange, GroupId)>> {
        self.map.as_ref().map(|m| m.split_range(range))
    }

    /// The node to send attempt number `attempt` (0-based) for `group` to: the cached leader
    /// if there is one, otherwise the replicas in turn, otherwise the seeds in turn.
    pub fn node_for(&self, group: GroupId, attempt: usize) -> Option<NodeId> {
        let route = self.groups.get(&group);
        if let Some(leader) = route.and_then(|r| r.leader) {
            return Some(leader);
        }
        let replicas = route.map(|r| r.replicas.as_slice()).unwrap_or_default();
        pick(replicas, attempt).or_else(|| pick(&self.seeds, attempt))
    }

    /// A reply named `leader` as the leader of `group` (at `term`, if the reply said).
    pub fn leader_hint(&mut self, group: GroupId, leader: Option<NodeId>, term: Option<Term>) {
        let route = self.groups.entry(group).or_default();
        match term {
            Some(term) if term < route.term => {}
            Some(term) => {
                route.term = term;
                route.leader = leader;
            }
            None => route.leader = leader,
        }
    }

    /// `node` failed to serve `group` (unreachable, not a replica, not the leader and no
    /// hint): stop treating it as the leader.
    pub fn forget_leader(&mut self, group: GroupId, node: NodeId) {
        if let Some(route) = self.groups.get_mut(&group) {
            if route.leader == Some(node) {
                route.leader = None;
            }
        }
    }
}

fn pick<T: Copy>(items: &[T], attempt: usize) -> Option<T> {
    if items.is_empty() {
        None
    } else {
        items.get(attempt % items.len()).copied()
    }
}

#[cfg(test)]
mod tests {
    use decree_proto::admin::GroupLeader;

    use super::*;

    fn leader(group: u64, leader: Option<u64>, term: u64, replicas: &[u64]) -> GroupLeader {
        GroupLeader {
            group: GroupId(group),
            leader: leader.map(NodeId),
            term: Term(term),
            replicas: replicas.iter().copied().map(NodeId).collect(),
        }
    }

    fn reply(version: u64) -> RangeMapReply {
        RangeMapReply {
            version,
            ranges: vec![
                (KeyRange::new("", Some(Key::from("m"))), GroupId(1)),
                (KeyRange::from_start("m"), GroupId(2)),
            ],
            coordinator_group: GroupId(100),
            leaders: vec![
                leader(1, Some(11), 3, &[11, 12, 13]),
                leader(2, None, 1, &[21, 22, 23]),
                leader(100, Some(31), 1, &[31, 32, 33]),
                leader(101, Some(41), 1, &[41, 42, 43]),
            ],
            nodes: vec![],
            coordinator_groups: vec![GroupId(100), GroupId(101)],
        }
    }

    #[test]
    fn install_learns_map_coordinators_and_leaders() {
        let mut routes = Routes::with_seeds(vec![NodeId(31)]);
        assert_eq!(routes.install(&reply(2)), Ok(true));
        assert_eq!(routes.group_for(&Key::from("a")), Some(GroupId(1)));
        assert_eq!(routes.group_for(&Key::from("x")), Some(GroupId(2)));
        assert_eq!(routes.coordinator_groups, vec![GroupId(100), GroupId(101)]);
        assert_eq!(routes.node_for(GroupId(1), 5), Some(NodeId(11)));
        // Unknown leader: replicas in turn.
        assert_eq!(routes.node_for(GroupId(2), 0), Some(NodeId(21)));
        assert_eq!(routes.node_for(GroupId(2), 4), Some(NodeId(22)));
        // An older map is ignored.
        assert_eq!(routes.install(&reply(1)), Ok(false));
    }

    #[test]
    fn leader_hints_respect_terms() {
        let mut routes = Routes::default();
        routes.install(&reply(1)).unwrap();
        routes.leader_hint(GroupId(1), Some(NodeId(12)), Some(Term(2)));
        assert_eq!(routes.node_for(GroupId(1), 0), Some(NodeId(11)), "older term ignored");
        routes.leader_hint(GroupId(1), Some(NodeId(12)), Some(Term(4)));
        assert_eq!(routes.node_for(GroupId(1), 0), Some(NodeId(12)));
        routes.forget_leader(GroupId(1), NodeId(12));
        assert_eq!(routes.node_for(GroupId(1), 1), Some(NodeId(12)), "replica order");
        assert_eq!(routes.node_for(GroupId(1), 0), Some(NodeId(11)));
    }

    #[test]
    fn invalid_map_is_a_protocol_error_not_a_panic() {
        let mut bad = reply(3);
        bad.ranges.pop();
        assert!(matches!(Routes::default().install(&bad), Err(Error::Protocol { .. })));
    }
}
