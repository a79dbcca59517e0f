//! No acknowledged proposal is lost: once the client was told a command is applied at an
//! index, that index holds that command forever, on every replica — through crashes of any
//! number of nodes, torn writes and lost unsynced writes (DESIGN.md §1 Durability).
//!
//! Checked twice: when the acknowledgement happens (the entry must be the one known to be
//! committed there), and at the end of the run (every replica's state machine must hold it).

use std::collections::BTreeMap;

use decree_types::{GroupId, LogIndex, NodeId};

use super::state_machine_safety::StateMachineSafety;
use super::Violation;

/// Every acknowledged command, by (group, index).
#[derive(Debug, Default)]
pub struct AckedNotLost {
    acked: BTreeMap<(GroupId, LogIndex), u64>,
}

impl AckedNotLost {
    /// The client was told that `command` (with payload digest `digest`) is applied at `index`.
    pub fn on_ack(
        &mut self,
        group: GroupId,
        index: LogIndex,
        digest: u64,
        committed: &StateMachineSafety,
    ) -> Result<(), Violation> {
        if let Some(previous) = self.acked.insert((group, index), digest) {
            if previous != digest {
                return Err(Violation {
                    invariant: "no acknowledged proposal lost",
                    detail: format!("{group} {index} acknowledged twice, for different commands"),
                });
            }
        }
        match committed.at(group, index) {
            Some((_, d)) if d == digest => Ok(()),
            other => Err(Violation {
                invariant: "no acknowledged proposal lost",
                detail: format!(
                    "{group} {index} acknowledged {digest:#x} but applied entry is {other:?}"
                ),
            }),
        }
    }

    /// End of run: `contents` is one replica's state machine of `group`, as `(index, digest)`
    /// of every command it applied, in order; `applied` is its applied index. Every command
    /// acknowledged at or below `applied` must be there. (The liveness checker has already
    /// made sure each replica applied everything acknowledged, unless load never stopped.)
    pub fn check_replica(
        &self,
        node: NodeId,
        group: GroupId,
        applied: LogIndex,
        contents: &BTreeMap<LogIndex, u64>,
    ) -> Result<(), Violation> {
        for (&(g, index), &digest) in self.acked.range((group, LogIndex(0))..=(group, applied)) {
            if g != group {
                break;
            }
            if contents.get(&index) != Some(&digest) {
                return Err(Violation {
                    invariant: "no acknowledged proposal lost",
                    detail: format!(
                        "{node} {group}: acknowledged {digest:#x} at {index} but the replica holds {:?}",
                        contents.get(&index)
                    ),
                });
            }
        }
        Ok(())
    }

    /// The highest acknowledged index of `group` (0 if none).
    pub fn max_index(&self, group: GroupId) -> LogIndex {
        self.acked
            .range((group, LogIndex(0))..=(group, LogIndex(u64::MAX)))
            .next_back()
            .map_or(LogIndex(0), |(k, _)| k.1)
    }

    /// How many commands were acknowledged (a run that acknowledged nothing proves little).
    pub fn count(&self) -> usize {
        self.acked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use decree_types::Term;

    #[test]
    fn a_replica_missing_an_acked_command_is_a_violation() {
        let mut sms = StateMachineSafety::default();
        let g = GroupId(1);
        sms.on_apply(NodeId(1), g, LogIndex(1), Term(1), 42).unwrap();
        let mut c = AckedNotLost::default();
        c.on_ack(g, LogIndex(1), 42, &sms).unwrap();
        assert!(c.on_ack(g, LogIndex(2), 43, &sms).is_err(), "acked but never applied");
        let full: BTreeMap<LogIndex, u64> = [(LogIndex(1), 42), (LogIndex(2), 43)].into();
        assert!(c.check_replica(NodeId(2), g, LogIndex(2), &full).is_ok());
        let empty = BTreeMap::new();
        assert!(c.check_replica(NodeId(2), g, LogIndex(2), &empty).is_err());
        assert!(c.check_replica(NodeId(2), g, LogIndex(0), &empty).is_ok(), "applied nothing yet");
        assert!(c.check_replica(NodeId(2), GroupId(2), LogIndex(9), &empty).is_ok());
        assert_eq!(c.count(), 2);
    }
}
