//! The range map as the coordinator group's consistent core (DESIGN.md §11): which key range
//! each participant group serves, the replicas of every group, where every node listens, and
//! which groups are coordinator groups, under one version number.
//!
//! Every replica starts from the same bootstrap description ([`ClusterMap::new`]), so every
//! replica built from it agrees; later changes are replicated `ReplaceClusterMap` entries,
//! conditional on the version they replace (compare-and-set), so they apply in one order
//! everywhere.

use std::collections::{BTreeMap, BTreeSet};

use decree_proto::admin::{GroupLeader, NodeAddr, RangeMapReply};
use decree_proto::limits::{ADDR_BYTES_MAX, GROUPS_REPORTED_MAX, RANGES_MAX};
use decree_types::limits::VOTERS_MAX;
use decree_types::{GroupId, NodeId, RangeMap, Term};
use serde::{Deserialize, Serialize};

/// The cluster's layout (see the module docs).
///
/// Invariant (checked by [`ClusterMap::new`] and on every restore): at least one coordinator
/// group; no coordinator group serves a key range; every group with replicas is a participant
/// or a coordinator group; every group named has between 1 and
/// `VOTERS_MAX` replicas; every replica has an address of at most `ADDR_BYTES_MAX` bytes;
/// the counts fit a [`RangeMapReply`]. Hence the reply built from it always passes the wire
/// limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    version: u64,
    ranges: RangeMap,
    replicas: BTreeMap<GroupId, Vec<NodeId>>,
    addrs: BTreeMap<NodeId, String>,
    coordinator_groups: Vec<GroupId>,
}

/// Why a description is not a valid cluster map.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClusterMapError {
    /// No coordinator group is listed.
    #[error("the cluster map lists no coordinator group")]
    NoCoordinatorGroup,
    /// A coordinator group also serves a key range.
    #[error("coordinator group {0} also serves a key range")]
    CoordinatorServesRange(GroupId),
    /// A group has no replicas listed, or more than `VOTERS_MAX`.
    #[error("group {group} lists {count} replicas (1..={VOTERS_MAX} allowed)")]
    ReplicaCount {
        /// The group.
        group: GroupId,
        /// How many it lists.
        count: usize,
    },
    /// Replicas are listed for a group that neither serves a range nor coordinates (a client
    /// could not tell what it is: see [`ClusterMap::reply`]).
    #[error("group {0} has replicas but serves no range and is no coordinator group")]
    UnknownGroup(GroupId),
    /// A replica's node has no address.
    #[error("node {0} has no address")]
    MissingAddress(NodeId),
    /// An address is longer than the wire allows.
    #[error("address of node {0} is longer than {ADDR_BYTES_MAX} bytes")]
    AddressTooLong(NodeId),
    /// More ranges, groups or nodes than one reply may carry.
    #[error("the cluster map is larger than one reply may carry")]
    TooLarge,
}

impl ClusterMap {
    /// A cluster map at version 1 from its bootstrap description. Replica lists are sorted
    /// and deduplicated; coordinator groups too.
    pub fn new(
        ranges: RangeMap,
        replicas: BTreeMap<GroupId, Vec<NodeId>>,
        addrs: BTreeMap<NodeId, String>,
        coordinator_groups: Vec<GroupId>,
    ) -> Result<ClusterMap, ClusterMapError> {
        let mut map = ClusterMap { version: 1, ranges, replicas, addrs, coordinator_groups };
        for nodes in map.replicas.values_mut() {
            nodes.sort_unstable();
            nodes.dedup();
        }
        map.coordinator_groups.sort_unstable();
        map.coordinator_groups.dedup();
        map.check()?;
        Ok(map)
    }

    /// Checks the type invariant.
    pub fn check(&self) -> Result<(), ClusterMapError> {
        if self.coordinator_groups.is_empty() {
            return Err(ClusterMapError::NoCoordinatorGroup);
        }
        let participants = self.ranges.groups();
        if let Some(g) = self.coordinator_groups.iter().find(|g| participants.contains(g)) {
            return Err(ClusterMapError::CoordinatorServesRange(*g));
        }
        let named: BTreeSet<GroupId> =
            participants.iter().chain(&self.coordinator_groups).copied().collect();
        for group in &named {
            let count = self.replicas.get(group).map_or(0, Vec::len);
            if count == 0 || count > VOTERS_MAX {
                return Err(ClusterMapError::ReplicaCount { group: *group, count });
            }
        }
        if let Some(extra) = self.replicas.keys().find(|g| !named.contains(g)) {
            return Err(ClusterMapError::UnknownGroup(*extra));
        }
        for node in self.replicas.values().flatten() {
            match self.addrs.get(node) {
                None => return Err(ClusterMapError::MissingAddress(*node)),
                Some(addr) if addr.len() > ADDR_BYTES_MAX => {
                    return Err(ClusterMapError::AddressTooLong(*node))
                }
                Some(_) => {}
            }
        }
        if self.ranges.len() > RANGES_MAX
            || self.replicas.len() > GROUPS_REPORTED_MAX
            || self.addrs.len() > GROUPS_REPORTED_MAX
        {
            return Err(ClusterMapError::TooLarge);
        }
        Ok(())
    }

    /// The version: 1 at bootstrap, one more after every applied change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Key ranges and the participant group serving each.
    pub fn ranges(&self) -> &RangeMap {
        &self.ranges
    }

    /// The coordinator groups, ascending ([`crate::coordinator_for`] picks among them).
    pub fn coordinator_groups(&self) -> &[GroupId] {
        &self.coordinator_groups
    }

    /// Is `group` a participant group (serves a key range)?
    pub fn is_participant(&self, group: GroupId) -> bool {
        self.ranges.iter().any(|(_, g)| g == group)
    }

    /// The replicas of `group`, ascending; empty if the map does not name it.
    pub fn replicas(&self, group: GroupId) -> &[NodeId] {
        self.replicas.get(&group).map_or(&[], Vec::as_slice)
    }

    /// The answer to `FetchRangeMap`: the map, with the leaders `leader_of` knows (a group it
    /// knows nothing of is reported with `leader: None`, term 0). `replier` is the coordinator
    /// group answering.
    ///
    /// The reply lists every group in `leaders`, and the coordinator groups, ascending, in
    /// `coordinator_groups`: the list [`crate::coordinator_for`] chooses among.
    pub fn reply(
        &self,
        replier: GroupId,
        leader_of: impl Fn(GroupId) -> Option<(NodeId, Term)>,
    ) -> RangeMapReply {
        let leaders = self
            .replicas
            .iter()
            .map(|(&group, replicas)| {
                let known = leader_of(group);
                GroupLeader {
                    group,
                    leader: known.map(|(n, _)| n),
                    term: known.map_or(Term(0), |(_, t)| t),
                    replicas: replicas.clone(),
                }
            })
            .collect();
        let nodes =
            self.addrs.iter().map(|(&node, addr)| NodeAddr { node, addr: addr.clone() }).collect();
        RangeMapReply {
            version: self.version,
            ranges: self.ranges.ranges().to_vec(),
            coordinator_group: replier,
            leaders,
            nodes,
            coordinator_groups: self.coordinator_groups.clone(),
        }
    }

    /// Replaces the layout with `next`'s, one version later (the apply side of
    /// `ReplaceClusterMap`). Refused, leaving the map unchanged, unless `expected_version` is
    /// the current version and `next` is valid.
    pub(crate) fn replace(
        &mut self,
        expected_version: u64,
        mut next: ClusterMap,
    ) -> Result<u64, ClusterMapError> {
        if expected_version != self.version {
            return Ok(self.version);
        }
        next.check()?;
        next.version = self.version + 1;
        *self = next;
        Ok(self.version)
    }
}

#[cfg(test)]
mod tests {
    use decree_types::{Key, KeyRange};

    use super::*;

    fn sample() -> ClusterMap {
        let ranges = RangeMap::split_at(vec![Key::from("m")], vec![GroupId(1), GroupId(2)])
            .expect("valid split");
        let replicas = BTreeMap::from([
            (GroupId(1), vec![NodeId(2), NodeId(1)]),
            (GroupId(2), vec![NodeId(1)]),
            (GroupId(9), vec![NodeId(3)]),
        ]);
        let addrs = (1..=3).map(|n| (NodeId(n), format!("10.0.0.{n}:7000"))).collect();
        ClusterMap::new(ranges, replicas, addrs, vec![GroupId(9)]).expect("valid map")
    }

    #[test]
    fn bootstrap_description_builds_version_1_and_a_reply_within_wire_limits() {
        let map = sample();
        assert_eq!(map.version(), 1);
        assert_eq!(map.replicas(GroupId(1)), &[NodeId(1), NodeId(2)]);
        assert!(map.is_participant(GroupId(2)) && !map.is_participant(GroupId(9)));
        let reply = map.reply(GroupId(9), |g| (g == GroupId(9)).then_some((NodeId(3), Term(4))));
        assert_eq!(reply.validate(), Ok(()));
        assert_eq!(reply.version, 1);
        assert_eq!(reply.ranges.len(), 2);
        assert_eq!(reply.ranges[1], (KeyRange::from_start("m"), GroupId(2)));
        assert_eq!(reply.leaders.len(), 3);
        assert_eq!(reply.leaders[2].leader, Some(NodeId(3)));
        assert_eq!(reply.leaders[2].term, Term(4));
        assert_eq!(reply.leaders[0].leader, None);
        assert_eq!(reply.nodes.len(), 3);
    }

    #[test]
    fn invalid_descriptions_are_refused() {
        let m = sample();
        let with = |replicas, addrs, coords| {
            ClusterMap::new(m.ranges.clone(), replicas, addrs, coords).map(|_| ())
        };
        assert_eq!(
            with(m.replicas.clone(), m.addrs.clone(), vec![]),
            Err(ClusterMapError::NoCoordinatorGroup)
        );
        assert_eq!(
            with(m.replicas.clone(), m.addrs.clone(), vec![GroupId(1)]),
            Err(ClusterMapError::CoordinatorServesRange(GroupId(1)))
        );
        let mut replicas = m.replicas.clone();
        replicas.remove(&GroupId(2));
        assert_eq!(
            with(replicas, m.addrs.clone(), vec![GroupId(9)]),
            Err(ClusterMapError::ReplicaCount { group: GroupId(2), count: 0 })
        );
        let mut replicas = m.replicas.clone();
        replicas.insert(GroupId(5), vec![NodeId(1)]);
        assert_eq!(
            with(replicas, m.addrs.clone(), vec![GroupId(9)]),
            Err(ClusterMapError::UnknownGroup(GroupId(5)))
        );
        let mut addrs = m.addrs.clone();
        addrs.remove(&NodeId(3));
        assert_eq!(
            with(m.replicas.clone(), addrs, vec![GroupId(9)]),
            Err(ClusterMapError::MissingAddress(NodeId(3)))
        );
    }

    #[test]
    fn replace_is_compare_and_set_on_the_version() {
        let mut map = sample();
        let next = sample();
        assert_eq!(map.replace(7, next.clone()), Ok(1), "stale expectation: unchanged");
        assert_eq!(map.version(), 1);
        assert_eq!(map.replace(1, next), Ok(2));
        assert_eq!(map.version(), 2);
    }
}
