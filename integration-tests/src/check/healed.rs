//! After healing: every group has exactly one leader that every replica follows, no intent is
//! left in any participant replica, every coordinator record is compacted (an outcome stub or
//! a tombstone), and the replicas of each group applied the same entries and hold equal
//! `digest()`s.

use decree_coordinator::Record;
use decree_host::{Either, ReplicatedMachine, Role};
use decree_types::{GroupId, LogIndex, NodeId};

use super::Violation;
use crate::bank::{is_intent, BankMachine};

/// One group's replicas: node, machine, role, last applied index.
pub type GroupView<'a> = (GroupId, Vec<(NodeId, &'a BankMachine, Role, LogIndex)>);

/// Checks the healed cluster.
pub fn check(groups: &[GroupView<'_>]) -> Result<(), Violation> {
    for (group, replicas) in groups {
        let leaders: Vec<NodeId> =
            replicas.iter().filter(|r| r.2.is_leader()).map(|r| r.0).collect();
        if leaders.len() != 1 {
            return Err(fail("healed: one leader per group", format!("{group} has {leaders:?}")));
        }
        let applied: Vec<LogIndex> = replicas.iter().map(|r| r.3).collect();
        if applied.windows(2).any(|w| w[0] != w[1]) {
            return Err(fail("healed: replicas caught up", format!("{group} applied {applied:?}")));
        }
        let digests: Vec<u64> = replicas.iter().map(|r| r.1.digest()).collect();
        if digests.windows(2).any(|w| w[0] != w[1]) {
            return Err(fail(
                "replicas that applied the same entries have equal digests",
                format!("{group} at {applied:?}: {digests:x?}"),
            ));
        }
        for (node, machine, _, _) in replicas {
            match machine {
                Either::Left(p) => {
                    if let Some((txn_id, _)) = p.state().txns().find(|(_, e)| is_intent(&e.state)) {
                        return Err(fail(
                            "healed: no intent remains",
                            format!("{txn_id} is still prepared on {node} {group}"),
                        ));
                    }
                }
                Either::Right(c) => {
                    let open = c.log().iter().find(|(_, r)| {
                        matches!(r, Record::Preparing { .. } | Record::Decided { .. })
                    });
                    if let Some((txn_id, record)) = open {
                        return Err(fail(
                            "healed: every coordinator record is compacted",
                            format!("{txn_id} on {node} {group}: {record:?}"),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn fail(invariant: &'static str, detail: String) -> Violation {
    Violation { invariant, detail }
}
