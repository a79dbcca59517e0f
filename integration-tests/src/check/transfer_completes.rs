//! RAFT-6 liveness of leadership transfer: a transfer to a reachable, caught-up target
//! completes within an election timeout — the target leads before the leader would give the
//! transfer up (proposals are refused meanwhile, so a transfer that silently times out costs
//! the group an election timeout of unavailability).
//!
//! The simulator asks for one transfer per group once the healing phase has converged (the
//! network is quiet and every replica caught up) and reports each new leader here.

use std::collections::BTreeMap;

use decree_types::{GroupId, NodeId};

use super::Violation;

/// Transfers under way, per group: the target and the time by which it must lead.
#[derive(Debug, Default)]
pub struct TransferCompletes {
    pending: BTreeMap<GroupId, (NodeId, u64)>,
    started: bool,
    completed: usize,
}

impl TransferCompletes {
    /// Have the transfers been asked for?
    pub fn started(&self) -> bool {
        self.started
    }

    /// The transfers are being asked for now (there may be none to ask for).
    pub fn mark_started(&mut self) {
        self.started = true;
    }

    /// A transfer of `group` to `target` was accepted by its leader; `target` must lead by
    /// `deadline_ns`.
    pub fn on_start(&mut self, group: GroupId, target: NodeId, deadline_ns: u64) {
        self.pending.insert(group, (target, deadline_ns));
    }

    /// `node` became leader of `group`.
    pub fn on_leader(&mut self, group: GroupId, node: NodeId) {
        if self.pending.get(&group).is_some_and(|(target, _)| *target == node) {
            self.pending.remove(&group);
            self.completed += 1;
        }
    }

    /// Every transfer asked for has completed.
    pub fn settled(&self) -> bool {
        self.started && self.pending.is_empty()
    }

    /// Transfers completed.
    pub fn completed(&self) -> usize {
        self.completed
    }

    /// No transfer is past its deadline at `now_ns`.
    pub fn check(&self, now_ns: u64) -> Result<(), Violation> {
        match self.pending.iter().find(|(_, (_, deadline))| now_ns > *deadline) {
            None => Ok(()),
            Some((group, (target, deadline))) => Err(Violation {
                invariant: "RAFT-6 a transfer to a caught-up target completes in time",
                detail: format!(
                    "{group}: {target} does not lead {} ms after the transfer's deadline",
                    (now_ns - deadline) / 1_000_000
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_whose_target_does_not_lead_in_time_is_a_violation() {
        let mut t = TransferCompletes::default();
        t.mark_started();
        t.on_start(GroupId(1), NodeId(2), 100);
        t.on_start(GroupId(2), NodeId(3), 100);
        t.on_leader(GroupId(1), NodeId(3));
        t.on_leader(GroupId(2), NodeId(3));
        assert!(!t.settled());
        assert!(t.check(100).is_ok());
        assert!(t.check(101).is_err(), "group 1's target never led");
        t.on_leader(GroupId(1), NodeId(2));
        assert!(t.settled() && t.check(1_000).is_ok());
        assert_eq!(t.completed(), 2);
    }
}
