//! RAFT-3 linearizable reads: a ReadIndex read must observe every write acknowledged before
//! the read was issued. The read is served at `index` once the replica applied `index`, so it
//! observes exactly the entries up to `index`; it is linearizable iff `index` is at least the
//! highest index acknowledged to any client before the read began (Raft thesis §6.4).

use std::collections::BTreeMap;

use decree_types::{GroupId, LogIndex, NodeId};

use super::Violation;

/// A read waiting for its index.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    group: GroupId,
    node: NodeId,
    /// The highest acknowledged index of the group when the read was issued.
    floor: LogIndex,
}

/// Reads in flight, by context.
#[derive(Debug, Default)]
pub struct LinearizableReads {
    pending: BTreeMap<u64, PendingRead>,
    served: usize,
}

impl LinearizableReads {
    /// A read `ctx` of `group` was issued at `node` while `floor` was the highest index
    /// acknowledged in the group.
    pub fn on_issue(&mut self, ctx: u64, group: GroupId, node: NodeId, floor: LogIndex) {
        self.pending.insert(ctx, PendingRead { group, node, floor });
    }

    /// `node` served read `ctx` of `group` at `index`, having applied `applied`.
    pub fn on_served(
        &mut self,
        ctx: u64,
        group: GroupId,
        node: NodeId,
        index: LogIndex,
        applied: LogIndex,
    ) -> Result<(), Violation> {
        let Some(read) = self.pending.remove(&ctx) else { return Ok(()) };
        let violation = |detail| Err(Violation { invariant: "RAFT-3 linearizable reads", detail });
        if read.group != group || read.node != node {
            return violation(format!(
                "read {ctx} issued to {} {} answered by {node} {group}",
                read.node, read.group
            ));
        }
        if index < read.floor {
            return violation(format!(
                "{node} {group} served read {ctx} at {index}, below {} acknowledged before it began",
                read.floor
            ));
        }
        if applied < index {
            return violation(format!(
                "{node} {group} served read {ctx} at {index} having applied only {applied}"
            ));
        }
        self.served += 1;
        Ok(())
    }

    /// The read failed or its node went down: no outcome.
    /// The group read `ctx` was issued for, if it is pending.
    pub fn group_of(&self, ctx: u64) -> Option<GroupId> {
        self.pending.get(&ctx).map(|r| r.group)
    }

    pub fn forget(&mut self, ctx: u64) {
        self.pending.remove(&ctx);
    }

    /// Every read pending at `node` has no outcome (it crashed).
    pub fn node_down(&mut self, node: NodeId) {
        self.pending.retain(|_, r| r.node != node);
    }

    /// Reads served and checked.
    pub fn served(&self) -> usize {
        self.served
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_below_an_earlier_ack_is_a_violation() {
        let mut c = LinearizableReads::default();
        let (g, n) = (GroupId(1), NodeId(1));
        c.on_issue(1, g, n, LogIndex(5));
        assert!(c.on_served(1, g, n, LogIndex(5), LogIndex(5)).is_ok());
        c.on_issue(2, g, n, LogIndex(5));
        assert!(c.on_served(2, g, n, LogIndex(4), LogIndex(9)).is_err());
        c.on_issue(3, g, n, LogIndex(1));
        assert!(c.on_served(3, g, n, LogIndex(4), LogIndex(3)).is_err(), "not applied yet");
        c.on_issue(4, g, n, LogIndex(1));
        c.node_down(n);
        assert!(c.on_served(4, g, n, LogIndex(0), LogIndex(0)).is_ok(), "forgotten");
        assert_eq!(c.served(), 1);
    }
}
