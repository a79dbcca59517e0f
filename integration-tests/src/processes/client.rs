//! A client of `decree-lognode` clusters: follows `NotLeader` hints, retries what is safe to
//! retry, and reports an outcome it could not learn as [`ProposeOutcome::Unknown`] — never as
//! a failure, because such a proposal may still be applied.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use decree_runtime::node_shell::rpc::{LogRequest, LogResponse, NodeStatus, Refusal};
use decree_types::{GroupId, LogIndex, NodeId, Term};
use tokio::time::Instant;

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
        request: LogRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<LogResponse, CallError>> + Send;
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
}

impl<C: Caller> LogClient<C> {
    /// A client of the cluster made of `nodes`.
    pub fn new(caller: Arc<C>, nodes: Vec<NodeId>) -> Self {
        LogClient { caller, nodes, leaders: Mutex::new(BTreeMap::new()) }
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
    pub async fn call(&self, node: NodeId, request: LogRequest) -> Result<LogResponse, CallError> {
        self.caller.call(node, request, CALL_TIMEOUT).await
    }

    /// Proposes `command` to `group` until it is acknowledged, or until `deadline` passes or an
    /// attempt's outcome cannot be learned (then [`ProposeOutcome::Unknown`]).
    ///
    /// Retried only when the proposal was certainly not appended (NotLeader, Overloaded,
    /// unreachable node) or certainly never applied (Superseded), so an acknowledged command
    /// is never applied twice.
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
            let request = LogRequest::Propose { group, command: command.clone() };
            match self.call(target, request).await {
                Ok(LogResponse::Applied { index, term }) => {
                    self.set_leader(group, target);
                    return ProposeOutcome::Acknowledged { index, term, via: target };
                }
                Ok(LogResponse::NotLeader { hint, .. }) => {
                    let next = hint.filter(|h| *h != target).unwrap_or(self.next_after(target));
                    if hint.is_none() {
                        // Nobody leads yet (an election is running): wait a little.
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(200));
                    }
                    self.set_leader(group, next);
                    target = next;
                }
                Ok(LogResponse::Refused(Refusal::Superseded { .. }))
                | Ok(LogResponse::Refused(Refusal::Overloaded)) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
                Ok(LogResponse::Refused(Refusal::ShuttingDown)) => {
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
                }
                Err(CallError::NoAnswer(why)) => {
                    self.set_leader(group, self.next_after(target));
                    return ProposeOutcome::Unknown(format!("{target}: {why}"));
                }
            }
        }
    }

    /// A linearizable read (RAFT-3) of all of `group`'s applied commands, served by `node`.
    pub async fn read_all(&self, node: NodeId, group: GroupId) -> Result<Vec<Vec<u8>>, String> {
        let mut out = Vec::new();
        loop {
            let request = LogRequest::Read { group, from: out.len() as u64 };
            match self.call(node, request).await {
                Ok(LogResponse::Commands { commands, more, .. }) => {
                    out.extend(commands);
                    if !more {
                        return Ok(out);
                    }
                }
                Ok(other) => return Err(format!("{node} answered a read with {other:?}")),
                Err(e) => return Err(format!("{node}: {e:?}")),
            }
        }
    }

    /// `node`'s status.
    pub async fn status(&self, node: NodeId) -> Result<NodeStatus, String> {
        match self.call(node, LogRequest::Status).await {
            Ok(LogResponse::Status(s)) => Ok(s),
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
