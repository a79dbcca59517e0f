//! INV-R4 Leader Completeness: if an entry is committed in a given term, it is present in the
//! logs of the leaders of all higher terms (Raft paper §5.4).
//!
//! "Committed" is known two ways. [`CommittedEntries`] records what leaders declared committed
//! (their commit index, observed after each of their iterations) together with the term that
//! committed it: that is the invariant's own key. Entries some replica applied are committed
//! too ([`StateMachineSafety`]); they cover entries a leader compacted before it was observed.

use std::collections::BTreeMap;

use decree_raft::core::{RaftCore, Role};
use decree_raft::EntryPayload;
use decree_types::{GroupId, LogIndex, NodeId, Term};

use super::state_machine_safety::StateMachineSafety;
use super::{LogSummary, Violation};

/// One committed entry: its term, payload digest, and the term of the leader that committed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Committed {
    term: Term,
    digest: u64,
    in_term: Term,
}

/// Every entry a leader declared committed, per group.
#[derive(Debug, Default)]
pub struct CommittedEntries {
    entries: BTreeMap<GroupId, BTreeMap<LogIndex, Committed>>,
}

impl CommittedEntries {
    /// Observes `core`, the replica of `group` on `node`, after one of its iterations: a
    /// leader's entries up to its commit index are committed, in its term. Two leaders never
    /// declare different entries committed at one index. `digest` identifies an entry's
    /// payload (the workload's encoding).
    pub fn observe(
        &mut self,
        node: NodeId,
        group: GroupId,
        core: &RaftCore,
        digest: fn(&EntryPayload) -> u64,
    ) -> Result<(), Violation> {
        if core.role() != Role::Leader {
            return Ok(());
        }
        let known = self.entries.entry(group).or_default();
        let from =
            known.last_key_value().map_or(LogIndex(0), |(i, _)| *i).max(core.snapshot_index());
        let commit = core.commit_index();
        let skip = usize::try_from(from.0 - core.snapshot_index().0).unwrap_or(usize::MAX);
        for e in core.entries().skip(skip).take_while(|e| e.index <= commit) {
            let entry =
                Committed { term: e.term, digest: digest(&e.payload), in_term: core.term() };
            known.insert(e.index, entry);
        }
        // The newest entries the leader holds below its commit index that were already known
        // must be the same ones (a cheap check of the recently committed part of the log).
        let recent = from.0.saturating_sub(8).max(core.snapshot_index().0 + 1);
        for index in (recent..=from.0.min(commit.0)).map(LogIndex) {
            let Some(k) = known.get(&index) else { continue };
            let held = core.term_at(index);
            if held != Some(k.term) {
                return Err(Violation {
                    invariant: "INV-R4 leader completeness",
                    detail: format!(
                        "{group}: {node} leading {} commits {index} as term {held:?}, but it was \
                         committed in {} as term {}",
                        core.term(),
                        k.in_term,
                        k.term
                    ),
                });
            }
        }
        Ok(())
    }

    /// Entries of `group` committed in a term before `term`: `(index, term, digest)`.
    fn before(
        &self,
        group: GroupId,
        term: Term,
    ) -> impl Iterator<Item = (LogIndex, Term, u64)> + '_ {
        self.entries
            .get(&group)
            .into_iter()
            .flatten()
            .filter(move |(_, c)| c.in_term < term)
            .map(|(i, c)| (*i, c.term, c.digest))
    }
}

/// Checks a new leader's log of `group` (elected in `term`) against every entry known to be
/// committed in an earlier term. Entries at or below the leader's snapshot are covered by it.
pub fn check_new_leader(
    group: GroupId,
    term: Term,
    leader_log: &LogSummary,
    applied: &StateMachineSafety,
    committed: &CommittedEntries,
) -> Result<(), Violation> {
    let by_apply = applied
        .committed(group)
        .filter(|(_, (entry_term, _))| *entry_term < term)
        .map(|(i, (t, d))| (i, t, d));
    for (index, entry_term, digest) in by_apply.chain(committed.before(group, term)) {
        if index <= leader_log.snapshot_index {
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
        let none = CommittedEntries::default();
        assert!(check_new_leader(GroupId(1), Term(3), &good, &sms, &none).is_ok());
        let compacted =
            LogSummary { node: NodeId(2), snapshot_index: LogIndex(1), entries: vec![] };
        assert!(check_new_leader(GroupId(1), Term(3), &compacted, &sms, &none).is_ok());
        let bad = LogSummary { node: NodeId(3), snapshot_index: LogIndex(0), entries: vec![] };
        assert!(check_new_leader(GroupId(1), Term(3), &bad, &sms, &none).is_err());
    }

    #[test]
    fn a_leader_missing_an_entry_committed_but_not_yet_applied_is_a_violation() {
        use decree_raft::core::{RaftConfig, Restored};
        use decree_types::DetRng;
        fn digest(payload: &EntryPayload) -> u64 {
            match payload {
                EntryPayload::Noop => 0,
                EntryPayload::Command(bytes) => crate::check::command_digest(bytes),
            }
        }
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
        core.propose(0, b"x".to_vec()).expect("leader");
        let ready = core.ready();
        let (index, term) = ready.persist_mark().expect("entries to persist");
        core.on_persisted(index, term);
        assert_eq!(core.commit_index(), LogIndex(2));
        let mut committed = CommittedEntries::default();
        committed.observe(NodeId(1), GroupId(1), &core, digest).expect("first leader");
        let nothing_applied = StateMachineSafety::default();
        let lacking = LogSummary {
            node: NodeId(2),
            snapshot_index: LogIndex(0),
            entries: vec![(LogIndex(1), Term(1), 0)],
        };
        let v = check_new_leader(GroupId(1), Term(2), &lacking, &nothing_applied, &committed)
            .unwrap_err();
        assert!(v.detail.contains("committed entry i2"), "{v}");
        // The same entry committed in the leader's own term is not required of it.
        assert!(
            check_new_leader(GroupId(1), Term(1), &lacking, &nothing_applied, &committed).is_ok()
        );
    }
}
