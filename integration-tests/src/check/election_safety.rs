//! INV-R1 Election Safety: at most one leader can be elected in a given term (Raft paper
//! Fig. 3 / thesis Fig. 3.2), per group.

use std::collections::BTreeMap;

use decree_types::{GroupId, NodeId, Term};

use super::Violation;

/// Remembers who was leader of each (group, term).
#[derive(Debug, Default)]
pub struct ElectionSafety {
    leaders: BTreeMap<(GroupId, Term), NodeId>,
}

impl ElectionSafety {
    /// `node` reports that it is leader of `group` in `term`.
    pub fn on_leader(&mut self, group: GroupId, term: Term, node: NodeId) -> Result<(), Violation> {
        match self.leaders.insert((group, term), node) {
            Some(other) if other != node => Err(Violation {
                invariant: "INV-R1 election safety",
                detail: format!("{group} has two leaders in {term}: {other} and {node}"),
            }),
            _ => Ok(()),
        }
    }

    /// How many (group, term) pairs had a leader: shows the run exercised elections.
    pub fn elections(&self) -> usize {
        self.leaders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_leaders_in_one_term_is_a_violation() {
        let mut c = ElectionSafety::default();
        assert!(c.on_leader(GroupId(1), Term(2), NodeId(1)).is_ok());
        assert!(c.on_leader(GroupId(1), Term(2), NodeId(1)).is_ok());
        assert!(c.on_leader(GroupId(2), Term(2), NodeId(2)).is_ok());
        assert!(c.on_leader(GroupId(1), Term(3), NodeId(2)).is_ok());
        let v = c.on_leader(GroupId(1), Term(2), NodeId(3)).unwrap_err();
        assert!(v.detail.contains("two leaders"));
        assert_eq!(c.elections(), 3);
    }
}
