//! INV-R2 Leader Append-Only: a leader never overwrites or deletes entries in its log; it
//! only appends new entries (Raft paper Figure 3). Observed here as: while a replica leads a
//! term, its log only ever extends, except for a prefix it compacts into its snapshot.
//!
//! After every iteration of a leader the checker compares the log's ends with the previous
//! observation (the last index never goes back, the snapshot index never goes back, and the
//! entry that was last is still there unchanged); at every periodic log check it compares
//! every entry it saw the time before. A leader only appends entries of its own term with
//! fresh commands, so a rewrite that the cheap check misses (the same last entry after a
//! truncation) is caught by the full one.

use std::collections::BTreeMap;

use decree_raft::core::{RaftCore, Role};
use decree_raft::EntryPayload;
use decree_types::{GroupId, LogIndex, NodeId, Term};

use super::Violation;

/// What was last seen of one leader's log in its term.
#[derive(Clone, Debug)]
struct Seen {
    term: Term,
    snapshot_index: LogIndex,
    last_index: LogIndex,
    /// The last entry's term and payload digest (`None` when the log is all snapshot).
    last: Option<(Term, u64)>,
    /// Every entry held at the last full comparison: `(index, term, digest)`.
    full: Vec<(LogIndex, Term, u64)>,
}

/// The leaders' logs as last observed, per (node, group).
#[derive(Debug, Default)]
pub struct LeaderAppendOnly {
    seen: BTreeMap<(NodeId, GroupId), Seen>,
}

impl LeaderAppendOnly {
    /// Observes `core`, the replica of `group` on `node`, after one of its iterations;
    /// `full` compares every entry seen before (periodically), not only the log's ends;
    /// `digest` identifies an entry's payload (the workload's encoding).
    pub fn observe(
        &mut self,
        node: NodeId,
        group: GroupId,
        core: &RaftCore,
        full: bool,
        digest: fn(&EntryPayload) -> u64,
    ) -> Result<(), Violation> {
        let key = (node, group);
        if core.role() != Role::Leader {
            self.seen.remove(&key);
            return Ok(());
        }
        let now = Seen {
            term: core.term(),
            snapshot_index: core.snapshot_index(),
            last_index: core.last_index(),
            last: entry_at(core, core.last_index(), digest),
            full: if full { entries(core, digest) } else { Vec::new() },
        };
        let Some(mut before) = self.seen.remove(&key).filter(|s| s.term == now.term) else {
            self.seen.insert(key, now);
            return Ok(());
        };
        let violation = |what: String| {
            Err(Violation {
                invariant: "INV-R2 leader append-only",
                detail: format!("{node} {group} leading {}: {what}", now.term),
            })
        };
        if now.snapshot_index < before.snapshot_index {
            return violation(format!(
                "snapshot went back from {} to {}",
                before.snapshot_index, now.snapshot_index
            ));
        }
        if now.last_index < before.last_index {
            return violation(format!(
                "log shrank from {} to {}",
                before.last_index, now.last_index
            ));
        }
        let was_last = entry_at(core, before.last_index, digest);
        if before.last_index > now.snapshot_index && was_last != before.last {
            return violation(format!(
                "entry {} was {:?}, is {was_last:?}",
                before.last_index, before.last
            ));
        }
        if full {
            for &(index, term, was) in &before.full {
                let held = entry_at(core, index, digest);
                if index > now.snapshot_index && held != Some((term, was)) {
                    return violation(format!("entry {index} was ({term}, {was:#x}), is {held:?}"));
                }
            }
        }
        let full_seen = if full { now.full } else { std::mem::take(&mut before.full) };
        self.seen.insert(key, Seen { full: full_seen, ..now });
        Ok(())
    }
}

/// The `(term, payload digest)` of the entry at `index`, if the log holds it.
fn entry_at(
    core: &RaftCore,
    index: LogIndex,
    digest: fn(&EntryPayload) -> u64,
) -> Option<(Term, u64)> {
    let offset = index.0.checked_sub(core.snapshot_index().0 + 1)?;
    let entry = core.entries().nth(usize::try_from(offset).ok()?)?;
    Some((entry.term, digest(&entry.payload)))
}

fn entries(core: &RaftCore, digest: fn(&EntryPayload) -> u64) -> Vec<(LogIndex, Term, u64)> {
    core.entries().map(|e| (e.index, e.term, digest(&e.payload))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use decree_raft::core::{RaftConfig, Restored};
    use decree_types::DetRng;

    use crate::check::command_digest;

    /// The identity of a payload: its bytes' digest (0 for a no-op).
    fn digest(payload: &EntryPayload) -> u64 {
        match payload {
            EntryPayload::Noop => 0,
            EntryPayload::Command(bytes) => command_digest(bytes),
        }
    }

    /// A single-voter leader of term 1 holding its no-op and `commands`.
    fn leader(commands: &[&str]) -> RaftCore {
        let mut core = RaftCore::new(
            RaftConfig::default(),
            NodeId(1),
            vec![NodeId(1)],
            Restored::default(),
            DetRng::new(1),
            0,
        )
        .expect("a fresh replica");
        core.campaign(0);
        assert_eq!(core.role(), Role::Leader);
        for c in commands {
            core.propose(0, c.as_bytes().to_vec()).expect("leader");
        }
        core
    }

    #[test]
    fn a_leader_log_that_shrinks_or_changes_in_its_term_is_a_violation() {
        let g = GroupId(1);
        let mut check = LeaderAppendOnly::default();
        check.observe(NodeId(1), g, &leader(&["a", "b"]), true, digest).expect("first sight");
        check.observe(NodeId(1), g, &leader(&["a", "b", "c"]), false, digest).expect("extends");
        let shrunk = check.observe(NodeId(1), g, &leader(&["a"]), false, digest).unwrap_err();
        assert!(shrunk.detail.contains("shrank"), "{shrunk}");
        let mut check = LeaderAppendOnly::default();
        check.observe(NodeId(1), g, &leader(&["a", "b"]), true, digest).expect("first sight");
        let changed = check.observe(NodeId(1), g, &leader(&["a", "x"]), false, digest).unwrap_err();
        assert!(changed.detail.contains("entry i3"), "{changed}");
        let mut check = LeaderAppendOnly::default();
        check.observe(NodeId(1), g, &leader(&["a", "b", "c"]), true, digest).expect("first sight");
        check
            .observe(NodeId(1), g, &leader(&["a", "y", "c"]), false, digest)
            .expect("ends unchanged");
        let full =
            check.observe(NodeId(1), g, &leader(&["a", "y", "c"]), true, digest).unwrap_err();
        assert!(full.detail.contains("entry i3"), "the full comparison: {full}");
    }
}
