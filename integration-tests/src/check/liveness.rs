//! Liveness after healing: once faults stop, every node is up and every link is healed, each
//! group must — within a bound — have exactly one leader that every replica follows, commit a
//! proposal made after the heal, and every replica must apply it (protocol.md §9 "eventually",
//! TESTING.md §3 phases).

use decree_types::{GroupId, LogIndex, NodeId, Term};

use super::Violation;

/// One replica's view of its group, as the node reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaView {
    /// The replica.
    pub node: NodeId,
    /// Its current term.
    pub term: Term,
    /// The leader it follows (itself if leader).
    pub leader: Option<NodeId>,
    /// Is it the leader?
    pub is_leader: bool,
    /// Its applied index.
    pub applied: LogIndex,
}

/// Is `group` converged? `probe` is the index at which the post-heal proposal was
/// acknowledged, if it was. Returns why not, for the failure message.
pub fn converged(
    group: GroupId,
    views: &[ReplicaView],
    probe: Option<LogIndex>,
) -> Result<(), String> {
    let leaders: Vec<&ReplicaView> = views.iter().filter(|v| v.is_leader).collect();
    let [leader] = leaders.as_slice() else {
        return Err(format!("{group} has {} leaders: {leaders:?}", leaders.len()));
    };
    if let Some(v) = views.iter().find(|v| v.term != leader.term || v.leader != Some(leader.node)) {
        return Err(format!(
            "{group}: {} is at {} following {:?}, leader {} is at {}",
            v.node, v.term, v.leader, leader.node, leader.term
        ));
    }
    let Some(probe) = probe else {
        return Err(format!("{group}: no proposal acknowledged since the heal"));
    };
    if let Some(v) = views.iter().find(|v| v.applied < probe) {
        return Err(format!("{group}: {} applied only {} of {probe}", v.node, v.applied));
    }
    Ok(())
}

/// The healing phase ran out of time with `reason` still true.
pub fn timed_out(group: GroupId, bound_ms: u64, reason: String) -> Violation {
    Violation {
        invariant: "liveness after heal",
        detail: format!("{group} did not converge within {bound_ms} ms of healing: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(node: u64, term: u64, leader: u64, applied: u64) -> ReplicaView {
        ReplicaView {
            node: NodeId(node),
            term: Term(term),
            leader: Some(NodeId(leader)),
            is_leader: node == leader,
            applied: LogIndex(applied),
        }
    }

    #[test]
    fn one_leader_followed_by_all_and_probe_applied_everywhere() {
        let g = GroupId(1);
        let ok = [view(1, 3, 1, 9), view(2, 3, 1, 9), view(3, 3, 1, 10)];
        assert!(converged(g, &ok, Some(LogIndex(9))).is_ok());
        assert!(converged(g, &ok, None).is_err());
        assert!(converged(g, &ok, Some(LogIndex(10))).is_err(), "n1 lags");
        let split = [view(1, 3, 1, 9), view(2, 4, 2, 9), view(3, 3, 1, 9)];
        assert!(converged(g, &split, Some(LogIndex(9))).is_err());
        let stale = [view(1, 3, 1, 9), view(2, 2, 1, 9)];
        assert!(converged(g, &stale, Some(LogIndex(1))).is_err());
    }
}
