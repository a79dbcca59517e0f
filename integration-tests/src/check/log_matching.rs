//! INV-R3 Log Matching: if two logs contain an entry with the same index and term, the logs
//! are identical in all entries up through that index (Raft paper §5.3).

use decree_types::{GroupId, LogIndex};

use super::{LogSummary, Violation};

/// Compares every pair of replicas' logs of one group.
///
/// Only the overlap both logs still hold can be compared (entries below a snapshot are gone);
/// compacted prefixes are covered by state machine safety, which checks what was applied.
pub fn check(group: GroupId, logs: &[LogSummary]) -> Result<(), Violation> {
    for (i, a) in logs.iter().enumerate() {
        for b in &logs[i + 1..] {
            check_pair(group, a, b)?;
        }
    }
    Ok(())
}

fn check_pair(group: GroupId, a: &LogSummary, b: &LogSummary) -> Result<(), Violation> {
    let lo = a.snapshot_index.max(b.snapshot_index).0 + 1;
    let hi = a.last_index().min(b.last_index()).0;
    // The highest index where both hold an entry of the same term.
    let Some(anchor) = (lo..=hi).rev().find(|&k| {
        let (ta, tb) = (a.at(LogIndex(k)), b.at(LogIndex(k)));
        ta.is_some() && ta.map(|e| e.0) == tb.map(|e| e.0)
    }) else {
        return Ok(());
    };
    for k in lo..=anchor {
        let (ea, eb) = (a.at(LogIndex(k)), b.at(LogIndex(k)));
        if ea != eb {
            return Err(Violation {
                invariant: "INV-R3 log matching",
                detail: format!(
                    "{group}: {} and {} agree at {} (term {:?}) but differ at i{k}: {ea:?} vs {eb:?}",
                    a.node,
                    b.node,
                    LogIndex(anchor),
                    a.at(LogIndex(anchor)).map(|e| e.0),
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use decree_types::{NodeId, Term};

    fn log(node: u64, snap: u64, terms: &[(u64, u64)]) -> LogSummary {
        LogSummary {
            node: NodeId(node),
            snapshot_index: LogIndex(snap),
            entries: terms
                .iter()
                .enumerate()
                .map(|(k, &(t, d))| (LogIndex(snap + 1 + k as u64), Term(t), d))
                .collect(),
        }
    }

    #[test]
    fn matching_prefixes_pass_and_divergence_below_a_match_fails() {
        let a = log(1, 0, &[(1, 10), (1, 11), (2, 12)]);
        let b = log(2, 0, &[(1, 10), (1, 11), (3, 99), (3, 100)]);
        assert!(check(GroupId(1), &[a.clone(), b]).is_ok(), "divergent tail after a match is fine");
        let c = log(3, 1, &[(1, 77), (2, 12)]);
        let v = check(GroupId(1), &[a, c]).unwrap_err();
        assert!(v.detail.contains("i2"), "{v}");
    }
}
