//! INV-R7 (RAFT-2, Figure 8 of the Raft paper): a leader's commit index advances only by
//! counting replicas of an entry of its own term; older entries commit only indirectly,
//! below such an entry.
//!
//! Observed after every iteration of a leader: when its commit index moved since the previous
//! observation in the same term, the entry at the new commit index must be of that term.

use std::collections::BTreeMap;

use decree_raft::core::{RaftCore, Role};
use decree_types::{GroupId, LogIndex, NodeId, Term};

use super::Violation;

/// Each leader's `(term, commit index)` as last observed, per (node, group).
#[derive(Debug, Default)]
pub struct CommitRule {
    seen: BTreeMap<(NodeId, GroupId), (Term, LogIndex)>,
}

impl CommitRule {
    /// Observes `core`, the replica of `group` on `node`, after one of its iterations.
    pub fn observe(
        &mut self,
        node: NodeId,
        group: GroupId,
        core: &RaftCore,
    ) -> Result<(), Violation> {
        let key = (node, group);
        if core.role() != Role::Leader {
            self.seen.remove(&key);
            return Ok(());
        }
        let (term, commit) = (core.term(), core.commit_index());
        let before = self.seen.insert(key, (term, commit));
        let Some((seen_term, seen_commit)) = before else { return Ok(()) };
        if seen_term != term || commit <= seen_commit || commit <= core.snapshot_index() {
            return Ok(());
        }
        match core.term_at(commit) {
            Some(t) if t == term => Ok(()),
            held => Err(Violation {
                invariant: "INV-R7 commit only by counting current-term entries",
                detail: format!(
                    "{node} {group} leading {term} moved its commit index from {seen_commit} to \
                     {commit}, an entry of term {held:?}"
                ),
            }),
        }
    }
}
