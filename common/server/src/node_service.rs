//! Requests addressed to the node rather than a group (`decree_proto::envelope::NODE_GROUP`):
//! the range map and the cluster status. Answered on the shell thread from the host's state.
//!
//! - `FetchRangeMap`: from this node's coordinator replica (its replicated cluster map, with
//!   the leaders this node knows), or, if it hosts none, from the cluster description it was
//!   started with. Not linearizable: a hint a client corrects with every redirect.
//! - `ClusterStatus`: every hosted group with its role, leader, term, commit and applied
//!   index on this replica, and the in-doubt transactions its coordinator replicas know
//!   (`CoordinatorGroup::in_doubt`), oldest first.

use std::collections::BTreeMap;

use decree_coordinator::{ClusterMap, CoordinatorGroup};
use decree_host::{Either, Host};
use decree_participant::ParticipantGroup;
use decree_proto::admin::{ClusterStatus, ClusterStatusReply, GroupRole, GroupStatus};
use decree_proto::limits::IN_DOUBT_REPORTED_MAX;
use decree_proto::{ErrorResponse, Request, Response};
use decree_raft::Disk;
use decree_runtime::node_shell::timed_disk::TimedDisk;
use decree_types::{GroupId, NodeId, Term};

/// The machine every group of a server runs: a participant or a coordinator group.
pub type ServerMachine = Either<ParticipantGroup, CoordinatorGroup>;

/// A machine's (and the node's) answer.
pub type Reply = Result<Response, ErrorResponse>;

/// What the node knows besides its host: its groups' roles and the bootstrap cluster map.
#[derive(Debug)]
pub struct NodeService {
    me: NodeId,
    roles: BTreeMap<GroupId, GroupRole>,
    bootstrap: ClusterMap,
}

impl NodeService {
    /// The service of node `me` hosting `roles`, started from `bootstrap`.
    pub fn new(me: NodeId, roles: BTreeMap<GroupId, GroupRole>, bootstrap: ClusterMap) -> Self {
        NodeService { me, roles, bootstrap }
    }

    /// Answers one node-level request.
    pub fn answer<D: Disk>(
        &self,
        host: &Host<TimedDisk<D>, ServerMachine>,
        request: Request,
    ) -> Reply {
        match request {
            Request::FetchRangeMap(_) => Ok(Response::RangeMap(self.range_map(host))),
            Request::ClusterStatus(status) => {
                Ok(Response::ClusterStatus(self.status(host, status)))
            }
            other => Err(ErrorResponse::invalid_argument(format!(
                "{} is not a node-level request; address it to a group",
                other.kind()
            ))),
        }
    }

    fn range_map<D: Disk>(
        &self,
        host: &Host<TimedDisk<D>, ServerMachine>,
    ) -> decree_proto::admin::RangeMapReply {
        let node = host.node();
        let leader_of = |g: GroupId| -> Option<(NodeId, Term)> {
            let core = node.core(g)?;
            Some((core.leader()?, core.term()))
        };
        let coordinator = node.groups().find_map(|g| match host.machine(g) {
            Some(Either::Right(c)) => Some((g, c)),
            _ => None,
        });
        match coordinator {
            Some((group, c)) => c.cluster_map().reply(group, leader_of),
            None => {
                // A valid map lists at least one coordinator group.
                let replier =
                    self.bootstrap.coordinator_groups().first().copied().unwrap_or_default();
                self.bootstrap.reply(replier, leader_of)
            }
        }
    }

    fn status<D: Disk>(
        &self,
        host: &Host<TimedDisk<D>, ServerMachine>,
        request: ClusterStatus,
    ) -> ClusterStatusReply {
        let node = host.node();
        let groups = node
            .groups()
            .filter_map(|g| {
                let core = node.core(g)?;
                Some(GroupStatus {
                    group: g,
                    role: self.roles.get(&g).cloned().unwrap_or(GroupRole::Coordinator),
                    replica: self.me,
                    leader: core.leader(),
                    term: core.term(),
                    commit_index: core.commit_index(),
                    applied_index: host.applied(g).unwrap_or_default(),
                })
            })
            .collect();
        let max = (request.in_doubt_max as usize).min(IN_DOUBT_REPORTED_MAX);
        let now = host.clock_last();
        let mut in_doubt = Vec::new();
        let mut omitted = 0;
        for g in node.groups() {
            if let Some(Either::Right(c)) = host.machine(g) {
                let (list, left_off) = c.in_doubt_report(now, max);
                in_doubt.extend(list);
                omitted += left_off;
            }
        }
        in_doubt.sort_by(|a, b| b.age_ms.cmp(&a.age_ms).then(a.txn_id.cmp(&b.txn_id)));
        omitted += in_doubt.len().saturating_sub(max) as u64;
        in_doubt.truncate(max);
        ClusterStatusReply { groups, in_doubt, in_doubt_omitted: omitted }
    }
}
