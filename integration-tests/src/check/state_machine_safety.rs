//! INV-R5 State Machine Safety: if a replica has applied a log entry at a given index, no other
//! replica ever applies a different entry for that index (Raft paper §5.4.3). Also INV-R9: a
//! replica's applied index only moves forward, one entry at a time, or jumps forward by
//! installing a snapshot; it restarts from its snapshot after a crash.

use std::collections::BTreeMap;

use decree_types::{GroupId, LogIndex, NodeId, Term};

use super::Violation;

/// Every entry any replica applied, and each replica's applied index.
#[derive(Debug, Default)]
pub struct StateMachineSafety {
    committed: BTreeMap<GroupId, BTreeMap<LogIndex, (Term, u64)>>,
    applied: BTreeMap<(NodeId, GroupId), LogIndex>,
}

impl StateMachineSafety {
    /// `node` applied the entry `(index, term, digest)` of `group`.
    pub fn on_apply(
        &mut self,
        node: NodeId,
        group: GroupId,
        index: LogIndex,
        term: Term,
        digest: u64,
    ) -> Result<(), Violation> {
        let applied = self.applied.entry((node, group)).or_default();
        if index != applied.next() {
            return Err(Violation {
                invariant: "INV-R9 applied index moves forward one entry at a time",
                detail: format!("{node} {group} applied {index} right after {applied}"),
            });
        }
        *applied = index;
        match self.committed.entry(group).or_default().entry(index) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert((term, digest));
                Ok(())
            }
            std::collections::btree_map::Entry::Occupied(o) if *o.get() == (term, digest) => Ok(()),
            std::collections::btree_map::Entry::Occupied(o) => Err(Violation {
                invariant: "INV-R5 state machine safety",
                detail: format!(
                    "{node} applied {group} {index} as ({term}, {digest:#x}) but it was applied \
                     elsewhere as ({}, {:#x})",
                    o.get().0,
                    o.get().1
                ),
            }),
        }
    }

    /// `node` installed a snapshot of `group` covering everything up to `index`, whose applied
    /// commands are `contents` as `(index, digest)`.
    pub fn on_restore(
        &mut self,
        node: NodeId,
        group: GroupId,
        index: LogIndex,
        contents: &[(LogIndex, u64)],
    ) -> Result<(), Violation> {
        let applied = self.applied.entry((node, group)).or_default();
        if index < *applied {
            return Err(Violation {
                invariant: "INV-R9 applied index never decreases",
                detail: format!(
                    "{node} {group} installed a snapshot at {index} after applying {applied}"
                ),
            });
        }
        *applied = index;
        let known = self.committed.entry(group).or_default();
        for &(i, digest) in contents {
            if let Some(&(_, d)) = known.get(&i) {
                if d != digest {
                    return Err(Violation {
                        invariant: "INV-R5 state machine safety",
                        detail: format!(
                            "{node} {group}: snapshot holds {digest:#x} at {i}, applied elsewhere as {d:#x}"
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// `node` restarted: its state machine starts again from its recovered snapshot at `index`.
    pub fn on_restart(&mut self, node: NodeId, group: GroupId, index: LogIndex) {
        self.applied.insert((node, group), index);
    }

    /// Every entry known to be committed in `group`, as `(index, (term, digest))`.
    pub fn committed(&self, group: GroupId) -> impl Iterator<Item = (LogIndex, (Term, u64))> + '_ {
        self.committed.get(&group).into_iter().flat_map(|m| m.iter().map(|(&i, &e)| (i, e)))
    }

    /// The entry applied at `index` of `group`, if any replica applied it.
    pub fn at(&self, group: GroupId, index: LogIndex) -> Option<(Term, u64)> {
        self.committed.get(&group)?.get(&index).copied()
    }

    /// `node`'s applied index for `group`.
    pub fn applied(&self, node: NodeId, group: GroupId) -> LogIndex {
        self.applied.get(&(node, group)).copied().unwrap_or_default()
    }

    /// How many entries were applied somewhere, over all groups.
    pub fn total_committed(&self) -> usize {
        self.committed.values().map(BTreeMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn different_entries_at_one_index_is_a_violation() {
        let mut c = StateMachineSafety::default();
        let g = GroupId(1);
        c.on_apply(NodeId(1), g, LogIndex(1), Term(1), 7).unwrap();
        c.on_apply(NodeId(2), g, LogIndex(1), Term(1), 7).unwrap();
        let v = c.on_apply(NodeId(3), g, LogIndex(1), Term(2), 8).unwrap_err();
        assert_eq!(v.invariant, "INV-R5 state machine safety");
    }

    #[test]
    fn gaps_and_backward_snapshots_are_violations() {
        let mut c = StateMachineSafety::default();
        let g = GroupId(1);
        assert!(c.on_apply(NodeId(1), g, LogIndex(2), Term(1), 7).is_err());
        c.on_restore(NodeId(1), g, LogIndex(5), &[(LogIndex(3), 9)]).unwrap();
        c.on_apply(NodeId(1), g, LogIndex(6), Term(1), 1).unwrap();
        assert!(c.on_restore(NodeId(1), g, LogIndex(4), &[]).is_err());
        c.on_restart(NodeId(1), g, LogIndex(5));
        c.on_apply(NodeId(1), g, LogIndex(6), Term(1), 1).unwrap();
        c.on_apply(NodeId(2), g, LogIndex(1), Term(1), 2).unwrap();
        c.on_apply(NodeId(2), g, LogIndex(2), Term(1), 3).unwrap();
        assert!(c.on_apply(NodeId(2), g, LogIndex(3), Term(1), 4).is_ok());
        assert!(c.on_restore(NodeId(3), g, LogIndex(3), &[(LogIndex(3), 5)]).is_err());
    }
}
