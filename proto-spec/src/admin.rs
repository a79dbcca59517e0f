//! Client and operator messages (DESIGN.md §9): discovering the range map and the group leaders,
//! and the cluster status that `decree status` prints (groups, leaders, terms, commit and
//! applied indexes, in-doubt transactions with their age and why they wait).
//!
//! The range map travels as plain `(KeyRange, GroupId)` pairs; the receiver builds and checks a
//! `decree_types::RangeMap` from them (gaps and overlaps are refused there, not here).

use decree_types::{GroupId, HlcTimestamp, KeyRange, LogIndex, NodeId, Term, TxnId};
use serde::{Deserialize, Serialize};

use crate::limits::{Bound, LimitError};
use crate::txn::check_range;

/// Ask a coordinator for the range map, the group leaders and node addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRangeMap {
    /// The version the client already caches; `0` if none. (Informational: the reply is always
    /// complete.)
    pub known_version: u64,
}

/// Who leads one group, as far as the replier knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupLeader {
    /// The group.
    pub group: GroupId,
    /// Its leader, if known.
    pub leader: Option<NodeId>,
    /// The term in which `leader` was seen leading.
    pub term: Term,
    /// Every replica of the group (a client tries them when the leader is unknown).
    pub replicas: Vec<NodeId>,
}

/// Where a node listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    /// The node.
    pub node: NodeId,
    /// `host:port` of its QUIC endpoint.
    pub addr: String,
}

/// Answer to [`FetchRangeMap`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeMapReply {
    /// Monotone version of the range map (bumped by every split, merge or move).
    pub version: u64,
    /// Every key range and the participant group serving it, ordered by range start.
    pub ranges: Vec<(KeyRange, GroupId)>,
    /// The coordinator group.
    pub coordinator_group: GroupId,
    /// Leaders of every group in `ranges` and of the coordinator group.
    pub leaders: Vec<GroupLeader>,
    /// Addresses of every node named in `leaders`.
    pub nodes: Vec<NodeAddr>,
    /// Every coordinator group, ascending: the list [`crate::placement::coordinator_for`]
    /// chooses among, the same on every coordinator, participant and client.
    pub coordinator_groups: Vec<GroupId>,
}

/// Ask any node for the status of the groups it hosts (a coordinator also reports the
/// in-doubt transactions it knows of).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Most in-doubt transactions to list, capped at
    /// [`crate::limits::IN_DOUBT_REPORTED_MAX`].
    pub in_doubt_max: u32,
}

/// What a group is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupRole {
    /// The coordinator group (decision log).
    Coordinator,
    /// A participant group serving one key range.
    Participant {
        /// The range it serves.
        range: KeyRange,
    },
}

/// One replica's view of one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The group.
    pub group: GroupId,
    /// What it is for.
    pub role: GroupRole,
    /// The replica reporting.
    pub replica: NodeId,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Its current term.
    pub term: Term,
    /// Its commit index (highest committed entry known).
    pub commit_index: LogIndex,
    /// Its applied index.
    pub applied_index: LogIndex,
}

/// Why an in-doubt transaction is still unresolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlockingReason {
    /// The coordinator is still collecting votes (C-4).
    AwaitingVotes,
    /// Prepared here; the coordinator says `Pending` (REC-3).
    AwaitingDecision,
    /// Prepared here; the coordinator group does not answer (no leader or no quorum).
    CoordinatorUnreachable,
    /// Decided; phase two is not yet acknowledged by every participant (C-6, REC-2).
    AwaitingAcks,
    /// A `STAGING` record under recovery (§7.2).
    StagingRecovery,
}

/// One in-doubt transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InDoubtTxn {
    /// The transaction.
    pub txn_id: TxnId,
    /// The group where it is prepared (or the coordinator group for a record).
    pub group: GroupId,
    /// Its coordinator group.
    pub coord_group: GroupId,
    /// Its prepare timestamp at `group`, if prepared there.
    pub prepare_ts: Option<HlcTimestamp>,
    /// How long it has been in doubt, in milliseconds.
    pub age_ms: u64,
    /// Why it waits.
    pub blocking: BlockingReason,
}

/// Answer to [`ClusterStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatusReply {
    /// Every group the replier hosts, by group id.
    pub groups: Vec<GroupStatus>,
    /// In-doubt transactions, oldest first.
    pub in_doubt: Vec<InDoubtTxn>,
    /// In-doubt transactions left off the list because of `in_doubt_max`.
    pub in_doubt_omitted: u64,
}

impl ClusterStatus {
    /// Checks [`crate::limits`].
    pub fn validate(&self) -> Result<(), LimitError> {
        Bound::InDoubtReported.check(self.in_doubt_max as usize)
    }
}

impl RangeMapReply {
    /// Checks [`crate::limits`].
    pub fn validate(&self) -> Result<(), LimitError> {
        Bound::Ranges.check(self.ranges.len())?;
        Bound::GroupsReported.check(self.leaders.len())?;
        Bound::GroupsReported.check(self.nodes.len())?;
        Bound::GroupsReported.check(self.coordinator_groups.len())?;
        for (range, _) in &self.ranges {
            check_range(range)?;
        }
        for leader in &self.leaders {
            Bound::Voters.check(leader.replicas.len())?;
        }
        for node in &self.nodes {
            Bound::AddrBytes.check(node.addr.len())?;
        }
        Ok(())
    }
}

impl ClusterStatusReply {
    /// Checks [`crate::limits`].
    pub fn validate(&self) -> Result<(), LimitError> {
        Bound::GroupsReported.check(self.groups.len())?;
        Bound::InDoubtReported.check(self.in_doubt.len())?;
        for g in &self.groups {
            if let GroupRole::Participant { range } = &g.role {
                check_range(range)?;
            }
        }
        Ok(())
    }
}
