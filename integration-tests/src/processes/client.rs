//! A client of `decree-lognode` clusters: follows the machine's redirects, retries what is
//! safe to retry, and reports an outcome it could not learn as [`ProposeOutcome::Unknown`] —
//! never as a failure, because such a proposal may still be applied.
//!
//! It speaks the node shell's client protocol (`decree_runtime::node_shell::rpc`) carrying
//! the replicated log's requests ([`super::log_machine`]), and keeps the highest HLC reading
//! any node answered with, to send with its next request (HLC-4: causality across nodes).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use decree_runtime::node_shell::rpc::{ClientReply, ClientRequest, NodeStatus, Refusal};
use decree_types::{GroupId, HlcTimestamp, LogIndex, NodeId, Term};
use tokio::time::Instant;

use super::log_machine::{self, Answer, ToyRequest, ToyResponse};

/// Why one call got no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// The request was certainly not delivered (no connection could be made).
    Unreachable(String),
    /// The request may have been delivered, but no answer came (timeout, connection lost).
    NoAnswer(String),
}

/// One request/response exchange with a node; implemented over the QUIC endpoint.
pub trait Caller: Send + Sync + 'static {
    /// Sends `request` to `node` and waits at most `timeout` for its answer.
    fn call(
        &self,
        node: NodeId,
        request: ClientRequest<ToyRequest>,
        timeout: Duration,
    ) -> impl Future<Output = Result<ClientReply<ToyResponse>, CallError>> + Send;
}

/// What became of one proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeOutcome {
    /// Applied (so a committed entry) at `index`, appended in `term`; acknowledged by `via`.
    Acknowledged { index: LogIndex, term: Term, via: NodeId },
    /// The client could not learn the outcome: it may or may not be applied.
    Unknown(String),
}

/// Per-call timeout: a little above an election timeout, so a call to a leader that just
/// died gives up and the client moves on to the next leader.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(3000);

/// A leader-following client.
#[derive(Debug)]
pub struct LogClient<C> {
    caller: Arc<C>,
    nodes: Vec<NodeId>,
    leaders: Mutex<BTreeMap<GroupId, NodeId>>,
    /// The highest HLC reading any node answered with.
    clock: Mutex<HlcTimestamp>,
}

impl<C: Caller> LogClient<C> {
    /// A client of the cluster made of `nodes`.
    pub fn new(caller: Arc<C>, nodes: Vec<NodeId>) -> Self {
        LogClient {
            caller,
            nodes,
            leaders: Mutex::new(BTreeMap::new()),
            clock: Mutex::new(HlcTimestamp::default()),
        }
    }

    /// The node this client believes leads `group`.
    pub fn leader_guess(&self, group: GroupId) -> NodeId {
        let leaders = self.leaders.lock().unwrap_or_else(|e| e.into_inner());
        leaders.get(&group).copied().unwrap_or(self.nodes[0])
    }

    fn set_leader(&self, group: GroupId, node: NodeId) {
        let mut leaders = self.leaders.lock().unwrap_or_else(|e| e.into_inner());
        leaders.insert(group, node);
    }

    fn next_after(&self, node: NodeId) -> NodeId {
        let pos = self.nodes.iter().position(|n| *n == node).unwrap_or(0);
        self.nodes[(pos + 1) % self.nodes.len()]
    }

    /// One raw call.
    pub async fn call(
        &self,
        node: NodeId,
        request: ClientRequest<ToyRequest>,
    ) -> Result<ClientReply<ToyResponse>, CallError> {
        self.caller.call(node, request, CALL_TIMEOUT).await
    }

    /// One request for `group`'s machine on `node`: the reply's HLC reading is kept for the
    /// next request.
    pub async fn call_machine(
        &self,
        node: NodeId,
        group: GroupId,
        request: ToyRequest,
    ) -> Result<ClientReply<ToyResponse>, CallError> {
        let sender_clock = *self.clock.lock().unwrap_or_else(|e| e.into_inner());
        let reply = self.call(node, ClientRequest::Machine { group, sender_clock, request }).await;
        if let Ok(ClientReply::Machine { sender_clock, .. }) = &reply {
            let mut clock = self.clock.lock().unwrap_or_else(|e| e.into_inner());
            *clock = (*clock).max(*sender_clock);
        }
        reply
    }

    /// Proposes `command` to `group` until it is acknowledged, or until `deadline` passes or an
    /// attempt's outcome cannot be learned (then [`ProposeOutcome::Unknown`]).
    ///
    /// Retried only when the proposal was certainly not appended (a redirect, an overloaded
    /// node, an unreachable node) or certainly never applied (superseded by another leader's
    /// entry), so an acknowledged command is never applied twice.
    pub async fn propose(
        &self,
        group: GroupId,
        command: Vec<u8>,
        deadline: Instant,
    ) -> ProposeOutcome {
        let mut target = self.leader_guess(group);
        let mut backoff = Duration::from_millis(5);
        loop {
            if Instant::now() >= deadline {
                return ProposeOutcome::Unknown("deadline passed before an answer".into());
            }
            let request = log_machine::append(command.clone());
            let answer = match self.call_machine(target, group, request).await {
                Ok(ClientReply::Machine { response, .. }) => log_machine::answer(response),
                Ok(ClientReply::Error { error, .. }) => log_machine::refused(error),
                Ok(ClientReply::Refused(Refusal::Overloaded)) => Answer::RetryLater,
                Ok(ClientReply::Refused(Refusal::ShuttingDown)) => {
                    return ProposeOutcome::Unknown(format!("{target} shut down while waiting"));
                }
                Ok(other) => {
                    return ProposeOutcome::Unknown(format!("unexpected answer {other:?}"))
                }
                Err(CallError::Unreachable(_)) => {
                    // Certainly not delivered: try the next node.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                    target = self.next_after(target);
                    self.set_leader(group, target);
                    continue;
                }
                Err(CallError::NoAnswer(why)) => {
                    self.set_leader(group, self.next_after(target));
                    return ProposeOutcome::Unknown(format!("{target}: {why}"));
                }
            };
            match answer {
                Answer::Applied { index, term } => {
                    self.set_leader(group, target);
                    return ProposeOutcome::Acknowledged { index, term, via: target };
                }
                Answer::Redirect { hint } => {
                    let next = hint.filter(|h| *h != target).unwrap_or(self.next_after(target));
                    if hint.is_none() {
                        // Nobody leads yet (an election is running): wait a little.
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(200));
                    }
                    self.set_leader(group, next);
                    target = next;
                }
                Answer::RetryLater => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
                Answer::Unknown(why) => {
                    return ProposeOutcome::Unknown(format!("{target}: {why}"));
                }
            }
        }
    }

    /// Every command of `group` applied on `node`'s replica, in log order: the replica's own
    /// state (not a linearizable read; a follower may lag), for checks once faults stop.
    pub async fn replica_commands(
        &self,
        node: NodeId,
        group: GroupId,
    ) -> Result<Vec<Vec<u8>>, String> {
        match self.call(node, ClientRequest::ReplicaState { group }).await {
            Ok(ClientReply::ReplicaState { state, .. }) => {
                log_machine::commands_of_state(&state).map_err(|e| format!("{node}: {e}"))
            }
            Ok(other) => Err(format!("{node} answered a replica read with {other:?}")),
            Err(e) => Err(format!("{node}: {e:?}")),
        }
    }

    /// `node`'s status.
    pub async fn status(&self, node: NodeId) -> Result<NodeStatus, String> {
        match self.call(node, ClientRequest::Status).await {
            Ok(ClientReply::Status(s)) => Ok(s),
            Ok(other) => Err(format!("{node} answered status with {other:?}")),
            Err(e) => Err(format!("{node}: {e:?}")),
        }
    }

    /// The leader of `group` and its term, as the reachable nodes report it: the node that
    /// says it leads, in the highest term.
    pub async fn find_leader(&self, group: GroupId) -> Option<(NodeId, Term)> {
        let mut best: Option<(NodeId, Term)> = None;
        for node in &self.nodes {
            let Ok(Ok(status)) =
                tokio::time::timeout(Duration::from_millis(500), self.status(*node)).await
            else {
                continue;
            };
            for g in status.groups.iter().filter(|g| g.group == group && g.is_leader) {
                if best.is_none_or(|(_, t)| g.term > t) {
                    best = Some((*node, g.term));
                }
            }
        }
        if let Some((leader, _)) = best {
            self.set_leader(group, leader);
        }
        best
    }

    /// Waits until every group has a leader that answers, or `deadline`.
    pub async fn wait_for_leaders(&self, groups: &[GroupId], deadline: Instant) -> bool {
        loop {
            let mut all = true;
            for g in groups {
                if self.find_leader(*g).await.is_none() {
                    all = false;
                }
            }
            if all {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
