//! Which coordinator group decides a transaction (DESIGN.md §11): a pure function of the
//! `txn_id` and the coordinator groups the range map lists (`RangeMapReply::coordinator_groups`),
//! so the client library, every coordinator and every participant agree without asking anyone.
//! It is part of the wire contract: a client resolving an ambiguous commit with `TxnStatus`
//! recomputes the group, and asking the wrong one would make it presume an abort.
//!
//! Rendezvous (highest-random-weight) hashing: each group scores `mix(txn ⊕ mix(group))`
//! and the highest score wins. The answer does not depend on the order of the list, and
//! adding a group moves only the transactions the new group wins (about `1/n` of them).

use decree_types::{GroupId, TxnId};

/// The coordinator group that decides `txn_id`, among `coordinator_groups`; `None` if the list
/// is empty (a valid range map always lists at least one).
pub fn coordinator_for(txn_id: TxnId, coordinator_groups: &[GroupId]) -> Option<GroupId> {
    let txn = mix(txn_id.0 as u64 ^ mix((txn_id.0 >> 64) as u64));
    let mut best: Option<(u64, GroupId)> = None;
    for &group in coordinator_groups {
        let score = mix(txn ^ mix(group.0.wrapping_add(0x9e37_79b9_7f4a_7c15)));
        // Ties (astronomically rare) go to the smaller group id, so the answer does not
        // depend on the order of the list.
        best = match best {
            Some((s, g)) if s > score || (s == score && g < group) => Some((s, g)),
            _ => Some((score, group)),
        };
    }
    best.map(|(_, g)| g)
}

/// SplitMix64's finaliser: a fixed bijection that spreads every input bit over the output.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn coordinator_for_is_deterministic_and_ignores_list_order() {
        let groups = [GroupId(100), GroupId(101), GroupId(102)];
        let reversed = [GroupId(102), GroupId(101), GroupId(100)];
        for t in 0..1000u128 {
            let txn = TxnId(t.wrapping_mul(0x1234_5678_9abc_def0_1122_3344_5566_7788));
            let g = coordinator_for(txn, &groups).unwrap();
            assert_eq!(Some(g), coordinator_for(txn, &groups));
            assert_eq!(Some(g), coordinator_for(txn, &reversed));
            assert!(groups.contains(&g));
        }
        assert_eq!(coordinator_for(TxnId(7), &[GroupId(5)]), Some(GroupId(5)));
        assert_eq!(coordinator_for(TxnId(7), &[]), None);
    }

    #[test]
    fn coordinator_for_spreads_transactions_evenly() {
        let groups = [GroupId(1), GroupId(2), GroupId(3), GroupId(4)];
        let mut count: BTreeMap<GroupId, u32> = BTreeMap::new();
        for t in 0..4000u128 {
            *count.entry(coordinator_for(TxnId(t), &groups).unwrap()).or_default() += 1;
        }
        // 1000 expected each; 20% slack is many standard deviations (sd ≈ 27).
        for g in groups {
            let n = count.get(&g).copied().unwrap_or(0);
            assert!((800..=1200).contains(&n), "{g} got {n} of 4000");
        }
    }

    #[test]
    fn adding_a_coordinator_group_moves_only_what_it_wins() {
        let before = [GroupId(1), GroupId(2), GroupId(3)];
        let after = [GroupId(1), GroupId(2), GroupId(3), GroupId(4)];
        for t in 0..2000u128 {
            let (a, b) = (coordinator_for(TxnId(t), &before), coordinator_for(TxnId(t), &after));
            assert!(a == b || b == Some(GroupId(4)), "txn {t} moved from {a:?} to {b:?}");
        }
    }
}
