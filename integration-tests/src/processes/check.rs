//! The check the kill test and the demo end with: **every acknowledged proposal is on every
//! replica, in the same order, exactly once** (no acknowledged proposal lost, state machine
//! safety).
//!
//! Inputs are what the client was told and what each replica returned from a read after the
//! faults stopped. A proposal whose outcome the client could not learn ("unknown") may be
//! present or absent, but wherever it is present it must be present once, at the same place on
//! every replica.

use std::collections::{BTreeMap, BTreeSet};

use decree_types::NodeId;

/// A summary of a passing check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// Acknowledged proposals, all found on every replica.
    pub acknowledged: usize,
    /// Commands on each replica (they are equal).
    pub replica_len: usize,
    /// Commands present whose outcome the client did not learn.
    pub unknown_present: usize,
}

/// Checks the replicas' lists against the acknowledged set. Returns every violation found.
pub fn check_replicas(
    acknowledged: &BTreeSet<Vec<u8>>,
    replicas: &BTreeMap<NodeId, Vec<Vec<u8>>>,
) -> Result<CheckReport, Vec<String>> {
    let mut violations = Vec::new();
    let Some((first_node, reference)) = replicas.iter().next() else {
        return Err(vec!["no replica was read".to_string()]);
    };

    // 1. Every replica holds the same list, in the same order (state machine safety).
    for (node, list) in replicas {
        if list != reference {
            let common = list.iter().zip(reference).take_while(|(a, b)| a == b).count();
            violations.push(format!(
                "replica {node} differs from replica {first_node}: lengths {} vs {}, first \
                 difference at position {common}",
                list.len(),
                reference.len()
            ));
        }
    }

    // 2. No command appears twice (each proposal attempt carries a unique command).
    for (node, list) in replicas {
        let mut seen = BTreeSet::new();
        for (pos, cmd) in list.iter().enumerate() {
            if !seen.insert(cmd) {
                violations.push(format!(
                    "replica {node}: command {} appears twice (again at position {pos})",
                    String::from_utf8_lossy(cmd)
                ));
            }
        }
    }

    // 3. Every acknowledged command is on every replica.
    for (node, list) in replicas {
        let present: BTreeSet<&Vec<u8>> = list.iter().collect();
        let missing: Vec<&Vec<u8>> = acknowledged.iter().filter(|c| !present.contains(c)).collect();
        if !missing.is_empty() {
            violations.push(format!(
                "replica {node} lacks {} acknowledged proposals, e.g. {}",
                missing.len(),
                String::from_utf8_lossy(missing[0])
            ));
        }
    }

    if violations.is_empty() {
        let unknown_present = reference.iter().filter(|c| !acknowledged.contains(*c)).count();
        Ok(CheckReport {
            acknowledged: acknowledged.len(),
            replica_len: reference.len(),
            unknown_present,
        })
    } else {
        Err(violations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<Vec<u8>> {
        items.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    fn acked(items: &[&str]) -> BTreeSet<Vec<u8>> {
        v(items).into_iter().collect()
    }

    #[test]
    fn equal_replicas_with_every_ack_pass_and_unknowns_are_allowed() {
        let replicas: BTreeMap<_, _> = (1..=3).map(|n| (NodeId(n), v(&["a", "u", "b"]))).collect();
        let report = check_replicas(&acked(&["a", "b"]), &replicas).unwrap();
        assert_eq!(report, CheckReport { acknowledged: 2, replica_len: 3, unknown_present: 1 });
    }

    #[test]
    fn a_lost_ack_a_divergence_and_a_duplicate_are_all_reported() {
        let mut replicas = BTreeMap::new();
        replicas.insert(NodeId(1), v(&["a", "b"]));
        replicas.insert(NodeId(2), v(&["a"]));
        replicas.insert(NodeId(3), v(&["a", "a"]));
        let errs = check_replicas(&acked(&["a", "b"]), &replicas).unwrap_err();
        assert!(errs.iter().any(|e| e.contains("replica n2 differs")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("appears twice")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("replica n2 lacks 1")), "{errs:?}");
    }

    #[test]
    fn reordering_is_a_violation() {
        let mut replicas = BTreeMap::new();
        replicas.insert(NodeId(1), v(&["a", "b"]));
        replicas.insert(NodeId(2), v(&["b", "a"]));
        assert!(check_replicas(&acked(&["a", "b"]), &replicas).is_err());
    }
}
