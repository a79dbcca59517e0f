//! RAFT-3 liveness of reads: every ReadIndex read is served or failed within a bound, so a
//! reader never waits forever (and the shell's waiter for it goes away). A read whose request
//! or answer is lost fails at its deadline; a read at a node that crashed has no outcome.
//!
//! Checked when the healing phase ends: every read issued more than the bound before then
//! has an outcome.

use std::collections::BTreeMap;

use decree_types::{GroupId, NodeId};

use super::Violation;

/// Reads without an outcome yet, by context: where and when each was issued.
#[derive(Debug, Default)]
pub struct ReadsResolve {
    pending: BTreeMap<u64, (GroupId, NodeId, u64)>,
}

impl ReadsResolve {
    /// Read `ctx` of `group` was issued at `node` at `at_ns`.
    pub fn on_issue(&mut self, ctx: u64, group: GroupId, node: NodeId, at_ns: u64) {
        self.pending.insert(ctx, (group, node, at_ns));
    }

    /// Read `ctx` was served or failed.
    pub fn on_outcome(&mut self, ctx: u64) {
        self.pending.remove(&ctx);
    }

    /// `node` crashed: its reads have no outcome, and need none.
    pub fn node_down(&mut self, node: NodeId) {
        self.pending.retain(|_, r| r.1 != node);
    }

    /// Every read issued more than `bound_ns` before `now_ns` has an outcome.
    pub fn check(&self, now_ns: u64, bound_ns: u64) -> Result<(), Violation> {
        let cutoff = now_ns.saturating_sub(bound_ns);
        match self.pending.iter().find(|(_, r)| r.2 < cutoff) {
            None => Ok(()),
            Some((ctx, (group, node, at_ns))) => Err(Violation {
                invariant: "RAFT-3 every read is served or failed in time",
                detail: format!(
                    "read {ctx} of {group} at {node}, issued at {} ms, has no outcome at {} ms \
                     (bound {} ms)",
                    at_ns / 1_000_000,
                    now_ns / 1_000_000,
                    bound_ns / 1_000_000
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_without_an_outcome_past_the_bound_is_a_violation() {
        let mut reads = ReadsResolve::default();
        let (g, n) = (GroupId(1), NodeId(1));
        reads.on_issue(1, g, n, 0);
        reads.on_issue(2, g, n, 500);
        reads.on_issue(3, g, NodeId(2), 0);
        reads.node_down(NodeId(2));
        assert!(reads.check(1_000, 1_000).is_ok(), "read 1 is still within the bound");
        assert!(reads.check(1_001, 1_000).is_err());
        reads.on_outcome(1);
        assert!(reads.check(1_001, 1_000).is_ok(), "read 2 is within the bound");
        assert!(reads.check(1_501, 1_000).is_err());
    }
}
