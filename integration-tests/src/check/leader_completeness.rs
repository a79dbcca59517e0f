//! INV-R4 Leader Completeness: if an entry is committed in a given term, it is present in the
//! logs of the leaders of all higher terms (Raft paper §5.4).
//!
//! "Committed" here means: some replica applied it (so it certainly was a committed entry).
//! That lags the real commit index, which makes the check weaker but never wrong.

use decree_types::{GroupId, Term};

use super::state_machine_safety::StateMachineSafety;
use super::{LogSummary, Violation};

/// Checks a new leader's log of `group` (elected in `term`) against every entry known to be
/// committed in an earlier term. Entries at or below the leader's snapshot are covered by it.
pub fn check_new_leader(
    group: GroupId,
    term: Term,
    leader_log: &LogSummary,
    committed: &StateMachineSafety,
) -> Result<(), Violation> {
    for (index, (entry_term, digest)) in committed.committed(group) {
        if index <= leader_log.snapshot_index || entry_term >= term {
            continue;
        }
        if leader_log.at(index) != Some((entry_term, digest)) {
            return Err(Violation {
                invariant: "INV-R4 leader completeness",
                detail: format!(
                    "{group}: {} became leader in {term} without committed entry {index} \
                     ({entry_term}); it holds {:?}",
                    leader_log.node,
                    leader_log.at(index)
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use decree_types::{LogIndex, NodeId};

    #[test]
    fn leader_missing_a_committed_entry_is_a_violation() {
        let mut sms = StateMachineSafety::default();
        sms.on_apply(NodeId(1), GroupId(1), LogIndex(1), Term(1), 5).unwrap();
        let good = LogSummary {
            node: NodeId(2),
            snapshot_index: LogIndex(0),
            entries: vec![(LogIndex(1), Term(1), 5), (LogIndex(2), Term(3), 0)],
        };
        assert!(check_new_leader(GroupId(1), Term(3), &good, &sms).is_ok());
        let compacted =
            LogSummary { node: NodeId(2), snapshot_index: LogIndex(1), entries: vec![] };
        assert!(check_new_leader(GroupId(1), Term(3), &compacted, &sms).is_ok());
        let bad = LogSummary { node: NodeId(3), snapshot_index: LogIndex(0), entries: vec![] };
        assert!(check_new_leader(GroupId(1), Term(3), &bad, &sms).is_err());
    }
}
