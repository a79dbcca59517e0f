//! A picture of the cluster in one round trip: every group's leader, term, commit and applied
//! index, and every in-doubt transaction with its age and what it waits for.
//!
//! One node-level `ClusterStatus` request goes to every node **at once** (one task per node,
//! each with a short timeout), so the answer comes within one timeout even when nodes are
//! down or paused — never one node after another. Each node reports every group it hosts
//! (its replica's view: leader, term, commit and applied index) and the in-doubt transactions
//! its coordinator replica knows from the coordinator group's log. Then, per group, the leader
//! is the replica claiming leadership in the highest term, and its numbers are shown; the
//! in-doubt list is the coordinator leader's. A node that does not answer is listed as down.
//!
//! The demo uses the same view to find whom to kill and to time recoveries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use decree_client::{ClusterFile, Link, QuicLink};
use decree_proto::admin::{ClusterStatus, ClusterStatusReply, GroupStatus};
use decree_proto::envelope::NODE_GROUP;
use decree_proto::limits::IN_DOUBT_REPORTED_MAX;
use decree_proto::{Envelope, Payload, Request, RequestId, Response};
use decree_types::{GroupId, HlcTimestamp, LogIndex, NodeId};
use serde::Serialize;

/// How long one replica may take to answer a status request.
pub const REPLICA_TIMEOUT: Duration = Duration::from_millis(700);

/// What one group looks like.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupView {
    /// The group.
    pub group: u64,
    /// `coordinator` or `participant`.
    pub role: &'static str,
    /// The key range of a participant group, as `[start, end)`.
    pub range: Option<String>,
    /// Its leader, if some replica answered as leader or named one.
    pub leader: Option<u64>,
    /// The leader's term, if reported.
    pub term: Option<u64>,
    /// The leader's commit index, if reported.
    pub commit_index: Option<u64>,
    /// The leader's applied index, if reported.
    pub applied_index: Option<u64>,
    /// Replicas that answered.
    pub replicas_up: Vec<u64>,
    /// Replicas that did not answer in time.
    pub replicas_down: Vec<u64>,
}

/// One in-doubt transaction as the coordinator reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InDoubtView {
    /// The transaction id.
    pub txn_id: String,
    /// Its coordinator group.
    pub coord_group: u64,
    /// The groups where it is in doubt, as reported (participants, or the coordinator group
    /// for its own record).
    pub groups: Vec<u64>,
    /// How long it has been in doubt, in milliseconds.
    pub age_ms: u64,
    /// What it waits for.
    pub waiting_for: String,
}

/// The whole picture.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    /// Every group, coordinator groups first, then participants by id.
    pub groups: Vec<GroupView>,
    /// In-doubt transactions, oldest first.
    pub in_doubt: Vec<InDoubtView>,
    /// In-doubt transactions the coordinators left off their lists.
    pub in_doubt_omitted: u64,
    /// Nodes that answered nothing at all.
    pub nodes_down: Vec<u64>,
}

impl ClusterView {
    /// Does every group have a leader?
    pub fn all_led(&self) -> bool {
        self.groups.iter().all(|g| g.leader.is_some())
    }

    /// The leader of `group`.
    pub fn leader_of(&self, group: u64) -> Option<u64> {
        self.groups.iter().find(|g| g.group == group).and_then(|g| g.leader)
    }
}

/// Asks every replica of every group for its status, all at once.
#[derive(Clone, Debug)]
pub struct Prober {
    link: Arc<QuicLink>,
    cluster: ClusterFile,
}

impl Prober {
    /// A prober over `link` for the groups of `cluster`.
    pub fn new(link: QuicLink, cluster: ClusterFile) -> Prober {
        Prober { link: Arc::new(link), cluster }
    }

    /// The cluster file's description.
    pub fn cluster(&self) -> &ClusterFile {
        &self.cluster
    }

    /// One status round: every node asked in parallel, within `timeout`.
    pub async fn view(&self, timeout: Duration) -> ClusterView {
        let mut tasks = tokio::task::JoinSet::new();
        for &node in self.cluster.nodes.keys() {
            let link = Arc::clone(&self.link);
            tasks.spawn(async move { (node, ask(&link, node, timeout).await) });
        }
        let mut replies: BTreeMap<NodeId, ClusterStatusReply> = BTreeMap::new();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((node, Some(reply))) = joined {
                replies.insert(node, reply);
            }
        }
        self.assemble(&replies)
    }

    /// The view from the nodes' replies (a node missing from `replies` did not answer).
    fn assemble(&self, replies: &BTreeMap<NodeId, ClusterStatusReply>) -> ClusterView {
        let mut groups: Vec<(GroupId, Option<String>, Vec<NodeId>)> = Vec::new();
        for g in &self.cluster.coordinator_groups {
            groups.push((g.group, None, g.replicas.clone()));
        }
        for (range, g) in &self.cluster.participant_groups {
            groups.push((g.group, Some(range.to_string()), g.replicas.clone()));
        }
        let coordinator_ids: BTreeSet<GroupId> =
            self.cluster.coordinator_groups.iter().map(|g| g.group).collect();
        let reported: BTreeMap<(GroupId, NodeId), &GroupStatus> = replies
            .iter()
            .flat_map(|(node, r)| r.groups.iter().map(move |s| ((s.group, *node), s)))
            .collect();
        let mut view = ClusterView::default();
        let mut in_doubt_from: Option<NodeId> = None;
        for (group, range, replicas) in &groups {
            let up: Vec<NodeId> =
                replicas.iter().copied().filter(|n| replies.contains_key(n)).collect();
            let down: Vec<u64> =
                replicas.iter().filter(|n| !replies.contains_key(n)).map(|n| n.0).collect();
            // The leader: a replica that says it leads, in the highest term (an old leader
            // that has not heard of the new term may still say so briefly); else the leader
            // most replicas name — if it answers itself (right after a crash the followers
            // still name the dead leader).
            let claims = up
                .iter()
                .filter_map(|n| reported.get(&(*group, *n)).filter(|s| s.leader == Some(*n)))
                .max_by_key(|s| s.term);
            let leader = claims.map(|s| s.replica).or_else(|| {
                let mut named: BTreeMap<NodeId, usize> = BTreeMap::new();
                for n in &up {
                    if let Some(l) = reported.get(&(*group, *n)).and_then(|s| s.leader) {
                        *named.entry(l).or_default() += 1;
                    }
                }
                named
                    .into_iter()
                    .filter(|(n, _)| up.contains(n))
                    .max_by_key(|(_, c)| *c)
                    .map(|(n, _)| n)
            });
            let status = leader.and_then(|l| reported.get(&(*group, l)).copied());
            let best = |f: fn(&GroupStatus) -> LogIndex| {
                status.map(f).or_else(|| {
                    up.iter().filter_map(|r| reported.get(&(*group, *r)).map(|s| f(s))).max()
                })
            };
            let term = status.map(|s| s.term).or_else(|| {
                up.iter().filter_map(|r| reported.get(&(*group, *r)).map(|s| s.term)).max()
            });
            if coordinator_ids.contains(group) && in_doubt_from.is_none() {
                in_doubt_from = leader.filter(|l| replies.contains_key(l));
            }
            view.groups.push(GroupView {
                group: group.0,
                role: if coordinator_ids.contains(group) { "coordinator" } else { "participant" },
                range: range.clone(),
                leader: leader.map(|n| n.0),
                term: term.map(|t| t.0),
                commit_index: best(|s| s.commit_index).map(|i| i.0),
                applied_index: best(|s| s.applied_index).map(|i| i.0),
                replicas_up: up.iter().map(|n| n.0).collect(),
                replicas_down: down,
            });
        }
        view.nodes_down =
            self.cluster.nodes.keys().filter(|n| !replies.contains_key(n)).map(|n| n.0).collect();

        // In-doubt transactions: the coordinator leader's replica knows the decided state;
        // without a leader, every replica's report, merged.
        let sources: Vec<&ClusterStatusReply> = match in_doubt_from {
            Some(n) => replies.get(&n).into_iter().collect(),
            None => replies.values().collect(),
        };
        let mut by_txn: BTreeMap<u128, InDoubtView> = BTreeMap::new();
        for reply in &sources {
            view.in_doubt_omitted = view.in_doubt_omitted.max(reply.in_doubt_omitted);
            for t in &reply.in_doubt {
                let row = by_txn.entry(t.txn_id.0).or_insert_with(|| InDoubtView {
                    txn_id: t.txn_id.to_string(),
                    coord_group: t.coord_group.0,
                    groups: Vec::new(),
                    age_ms: 0,
                    waiting_for: waiting_for(t.blocking).into(),
                });
                if !row.groups.contains(&t.group.0) {
                    row.groups.push(t.group.0);
                }
                row.age_ms = row.age_ms.max(t.age_ms);
                if t.group == t.coord_group {
                    row.waiting_for = waiting_for(t.blocking).into();
                }
            }
        }
        view.in_doubt = by_txn.into_values().collect();
        view.in_doubt.sort_by_key(|t| std::cmp::Reverse(t.age_ms));
        view
    }
}

/// What a blocking reason means to a person.
pub fn waiting_for(reason: decree_proto::admin::BlockingReason) -> &'static str {
    use decree_proto::admin::BlockingReason as B;
    match reason {
        B::AwaitingVotes => "votes from participants",
        B::AwaitingDecision => "the coordinator's decision",
        B::CoordinatorUnreachable => "an unreachable coordinator group",
        B::AwaitingAcks => "participants to acknowledge the decision",
        B::StagingRecovery => "recovery of a staging record",
    }
}

/// Sends one node-level `ClusterStatus` to `node`; `None` if it did not answer with one.
async fn ask(link: &QuicLink, node: NodeId, timeout: Duration) -> Option<ClusterStatusReply> {
    let envelope = Envelope {
        from: NodeId(0),
        group: NODE_GROUP,
        sender_clock: HlcTimestamp::new(wall_ns(), 0),
        payload: Payload::Request {
            request_id: RequestId(1),
            request: Request::ClusterStatus(ClusterStatus {
                in_doubt_max: IN_DOUBT_REPORTED_MAX as u32,
            }),
        },
    };
    match link.call(node, envelope, timeout).await {
        Ok(Envelope {
            payload: Payload::Response { response: Response::ClusterStatus(reply), .. },
            ..
        }) => Some(reply),
        _ => None,
    }
}

fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
