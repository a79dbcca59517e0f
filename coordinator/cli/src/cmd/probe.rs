//! A picture of the cluster in one round trip: every group's leader, term, commit and applied
//! index, and every in-doubt transaction with its age and what it waits for.
//!
//! One `ClusterStatus` request goes to every replica of every group **at once** (one task per
//! request, each with a short timeout), so the answer comes within one timeout even when nodes
//! are down or paused — never one node after another. Then:
//!
//! - a replica that leads its group answers; the coordinator leader's answer carries the
//!   in-doubt transactions from its decision log (the coordinator group's state, REC-*), and a
//!   node that reports the groups it hosts adds their term and commit and applied indexes;
//! - a replica that does not lead answers with a redirect naming the leader it knows;
//! - a replica that does not answer in time is listed as unreachable.
//!
//! The demo uses the same view to find whom to kill and to time recoveries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use decree_client::{ClusterFile, Link, LinkError, QuicLink};
use decree_proto::admin::{ClusterStatus, GroupStatus, InDoubtTxn};
use decree_proto::limits::IN_DOUBT_REPORTED_MAX;
use decree_proto::{Envelope, ErrorResponse, Payload, Request, RequestId, Response};
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

/// What one replica said.
enum Answer {
    Leads(Option<Box<decree_proto::admin::ClusterStatusReply>>),
    Names(Option<NodeId>),
    Silent,
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

    /// One status round: every `(group, replica)` asked in parallel, within `timeout`.
    pub async fn view(&self, timeout: Duration) -> ClusterView {
        let mut groups: Vec<(GroupId, Option<String>, Vec<NodeId>)> = Vec::new();
        for g in &self.cluster.coordinator_groups {
            groups.push((g.group, None, g.replicas.clone()));
        }
        for (range, g) in &self.cluster.participant_groups {
            groups.push((g.group, Some(range.to_string()), g.replicas.clone()));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (group, _, replicas) in &groups {
            for &node in replicas {
                let link = Arc::clone(&self.link);
                let group = *group;
                tasks.spawn(async move { (group, node, ask(&*link, group, node, timeout).await) });
            }
        }
        let mut answers: BTreeMap<(GroupId, NodeId), Answer> = BTreeMap::new();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((group, node, answer)) = joined {
                answers.insert((group, node), answer);
            }
        }

        let coordinator_ids: BTreeSet<GroupId> =
            self.cluster.coordinator_groups.iter().map(|g| g.group).collect();
        // Group statuses that nodes reported about the groups they host, by (group, replica).
        let mut reported: BTreeMap<(GroupId, NodeId), GroupStatus> = BTreeMap::new();
        let mut in_doubt: Vec<InDoubtTxn> = Vec::new();
        let mut in_doubt_omitted = 0;
        for answer in answers.values() {
            if let Answer::Leads(Some(reply)) = answer {
                for status in &reply.groups {
                    reported.insert((status.group, status.replica), status.clone());
                }
            }
        }
        let mut view = ClusterView::default();
        let mut node_answered: BTreeMap<NodeId, bool> = BTreeMap::new();
        for (group, range, replicas) in &groups {
            let mut leaders: Vec<NodeId> = Vec::new();
            let mut named: BTreeMap<NodeId, usize> = BTreeMap::new();
            let (mut up, mut down) = (Vec::new(), Vec::new());
            for &node in replicas {
                match answers.get(&(*group, node)) {
                    Some(Answer::Leads(reply)) => {
                        leaders.push(node);
                        up.push(node.0);
                        if coordinator_ids.contains(group) {
                            if let Some(reply) = reply {
                                in_doubt.extend(reply.in_doubt.iter().copied());
                                in_doubt_omitted += reply.in_doubt_omitted;
                            }
                        }
                    }
                    Some(Answer::Names(hint)) => {
                        up.push(node.0);
                        if let Some(h) = hint {
                            *named.entry(*h).or_default() += 1;
                        }
                    }
                    Some(Answer::Silent) | None => down.push(node.0),
                }
                let answered = up.last() == Some(&node.0);
                *node_answered.entry(node).or_default() |= answered;
            }
            // Several replicas answering as leader happens only briefly (an old leader that
            // has not heard of the new term): prefer the highest reported term, then the one
            // the followers name.
            let term_of = |n: NodeId| reported.get(&(*group, n)).map(|s| s.term);
            leaders.sort_by_key(|n| (term_of(*n), named.get(n).copied().unwrap_or(0)));
            let leader = leaders.last().copied().or_else(|| {
                // A leader named by followers counts only if it answers itself: right
                // after a crash the followers still name the dead leader.
                named
                    .iter()
                    .filter(|(n, _)| up.contains(&n.0))
                    .max_by_key(|(_, c)| **c)
                    .map(|(n, _)| *n)
            });
            let status = leader.and_then(|l| reported.get(&(*group, l)));
            let best = |f: fn(&GroupStatus) -> LogIndex| {
                status.map(f).or_else(|| {
                    replicas.iter().filter_map(|r| reported.get(&(*group, *r)).map(f)).max()
                })
            };
            view.groups.push(GroupView {
                group: group.0,
                role: if coordinator_ids.contains(group) { "coordinator" } else { "participant" },
                range: range.clone(),
                leader: leader.map(|n| n.0),
                term: status.map(|s| s.term.0),
                commit_index: best(|s| s.commit_index).map(|i| i.0),
                applied_index: best(|s| s.applied_index).map(|i| i.0),
                replicas_up: up,
                replicas_down: down,
            });
        }
        view.nodes_down = node_answered.iter().filter(|(_, a)| !**a).map(|(n, _)| n.0).collect();

        // One row per transaction: the groups it is reported in, its oldest age, and the
        // reason of its coordinator record if there is one (it says what the decision waits
        // for), else of a participant.
        let mut by_txn: BTreeMap<u128, InDoubtView> = BTreeMap::new();
        for t in &in_doubt {
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
        view.in_doubt = by_txn.into_values().collect();
        view.in_doubt.sort_by(|a, b| b.age_ms.cmp(&a.age_ms));
        view.in_doubt_omitted = in_doubt_omitted;
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

/// Sends one `ClusterStatus` to `node` for `group`.
async fn ask(link: &QuicLink, group: GroupId, node: NodeId, timeout: Duration) -> Answer {
    let request_id = RequestId(1);
    let envelope = Envelope {
        from: NodeId(0),
        group,
        sender_clock: HlcTimestamp::new(wall_ns(), 0),
        payload: Payload::Request {
            request_id,
            request: Request::ClusterStatus(ClusterStatus {
                in_doubt_max: IN_DOUBT_REPORTED_MAX as u32,
            }),
        },
    };
    match link.call(node, envelope, timeout).await {
        Ok(reply) => match reply.payload {
            Payload::Response { response: Response::ClusterStatus(r), .. } => {
                Answer::Leads(Some(Box::new(r)))
            }
            Payload::Response { response: Response::Redirect(r), .. } => {
                if r.leader == Some(node) {
                    Answer::Leads(None)
                } else {
                    Answer::Names(r.leader)
                }
            }
            Payload::Error { error: ErrorResponse::NotLeader { hint, .. }, .. } => {
                Answer::Names(hint)
            }
            Payload::Error {
                error: ErrorResponse::Unavailable { .. } | ErrorResponse::UnknownGroup { .. },
                ..
            } => Answer::Names(None),
            // A participant leader admits the request and refuses it (it keeps no cluster
            // status): it answered as the leader.
            Payload::Error { error: ErrorResponse::InvalidArgument { .. }, .. } => {
                Answer::Leads(None)
            }
            _ => Answer::Names(None),
        },
        Err(LinkError::Tls { .. } | LinkError::Closed | LinkError::Encode(_)) => Answer::Silent,
        Err(LinkError::NotDelivered { .. } | LinkError::MaybeDelivered { .. }) => Answer::Silent,
    }
}

fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
