//! Invariant checkers, one per file, each named after the invariant it checks
//! (protocol.md §9). The simulator feeds them what it observes; a checker never looks inside a
//! node except through the node's public inspection API.
//!
//! | file | invariant | when |
//! | --- | --- | --- |
//! | `election_safety` | INV-R1: at most one leader per term | on every role change |
//! | `leader_append_only` | INV-R2: a leader's log only extends in its term (but for compaction) | after every leader iteration; every entry periodically |
//! | `log_matching` | INV-R3: same (index, term) => same prefix | periodically, on every role change, after every crash and restart (with the recovered WAL), at the end |
//! | `leader_completeness` | INV-R4: a leader holds every entry committed in an earlier term (keyed on the leaders' commit index, and on apply) | on every election; commits after every leader iteration |
//! | `commit_rule` | INV-R7: a leader's commit index moves only onto an entry of its term | after every leader iteration |
//! | `state_machine_safety` | INV-R5 (+ INV-R9): same index => same entry applied; applied index never goes back | on every apply |
//! | `acked_not_lost` | no acknowledged proposal is lost | on every ack and at the end |
//! | `linearizable_reads` | RAFT-3: a ReadIndex read observes every earlier acknowledged write | on every served read |
//! | `reads_resolve` | RAFT-3: every read is served or failed within a bound | when healing ends |
//! | `transfer_completes` | RAFT-6: a transfer to a caught-up target completes within an election timeout | after healing converged |
//! | `liveness` | after healing: one leader per group, a new proposal committed, replicas converge | during the healing phase |
//! | `bank_conservation` | an audit sums to the initial total, no balance negative | on every audit (bank) |
//! | `p6_vote_after_apply` | P-6: a vote leaves only after its prepare entry applied | every iteration, before its output leaves (bank) |
//! | `atomicity` | INV-A1: every participant replica reaches the same outcome | at the end (bank) |
//! | `acked_commits` | final balances are exactly what the known outcomes give | at the end (bank) |
//! | `healed` | no intent, every coordinator record a stub, one leader, equal digests | while healing (bank) |

pub mod acked_commits;
pub mod acked_not_lost;
pub mod atomicity;
pub mod bank_conservation;
pub mod commit_rule;
pub mod election_safety;
pub mod healed;
pub mod leader_append_only;
pub mod leader_completeness;
pub mod linearizable_reads;
pub mod liveness;
pub mod log_matching;
pub mod p6_vote_after_apply;
pub mod reads_resolve;
pub mod state_machine_safety;
pub mod transfer_completes;

use std::fmt;

/// A broken invariant: which one, and what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The invariant's id and name, e.g. "INV-R1 election safety".
    pub invariant: &'static str,
    /// What was observed, with node, group, term and index.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} violated: {}", self.invariant, self.detail)
    }
}

impl std::error::Error for Violation {}

/// A compact identity of a client's command (the bytes it asked to append, or the value it
/// asked to write), for comparisons without keeping copies. Never 0 (0 is the no-op's).
pub fn command_digest(bytes: &[u8]) -> u64 {
    // FNV-1a; a collision only weakens a check.
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    }) | 1
}

/// What a checker may see of one replica's log: the snapshot it starts after, and the entries
/// it holds (contiguous from `snapshot_index + 1`) as `(index, term, payload digest)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogSummary {
    /// The replica.
    pub node: decree_types::NodeId,
    /// Last index covered by the replica's snapshot (0 if none).
    pub snapshot_index: decree_types::LogIndex,
    /// The entries after the snapshot.
    pub entries: Vec<(decree_types::LogIndex, decree_types::Term, u64)>,
}

impl LogSummary {
    /// The entry at `index`, if the log holds it (not compacted, not beyond the end).
    pub fn at(&self, index: decree_types::LogIndex) -> Option<(decree_types::Term, u64)> {
        let offset = index.0.checked_sub(self.snapshot_index.0 + 1)?;
        let &(i, t, d) = self.entries.get(usize::try_from(offset).ok()?)?;
        debug_assert_eq!(i, index, "LogSummary entries are contiguous");
        Some((t, d))
    }

    /// The last index the log holds.
    pub fn last_index(&self) -> decree_types::LogIndex {
        self.entries.last().map_or(self.snapshot_index, |e| e.0)
    }
}
