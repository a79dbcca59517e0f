//! INV-A1 atomicity: every participant of a transaction reaches the same outcome. Checked over
//! every participant replica's `txn_table`: a transaction committed in one group's replica
//! and aborted (or voted no) in another's, or decided differently on two replicas of one
//! group, breaks it.

use std::collections::BTreeMap;

use decree_participant::ParticipantGroup;
use decree_types::{GroupId, NodeId, TxnId};

use super::Violation;

/// Checks every replica's decided transactions against each other.
pub fn check(replicas: &[(NodeId, GroupId, &ParticipantGroup)]) -> Result<(), Violation> {
    let mut seen: BTreeMap<TxnId, (bool, NodeId, GroupId)> = BTreeMap::new();
    for (node, group, p) in replicas {
        for (txn_id, committed) in crate::bank::decided(p) {
            match seen.get(&txn_id) {
                Some(&(other, n, g)) if other != committed => {
                    return Err(Violation {
                        invariant: "INV-A1 atomicity",
                        detail: format!(
                            "{txn_id} is {} on {node} {group} but {} on {n} {g}",
                            word(committed),
                            word(other)
                        ),
                    })
                }
                Some(_) => {}
                None => {
                    seen.insert(txn_id, (committed, *node, *group));
                }
            }
        }
    }
    Ok(())
}

fn word(committed: bool) -> &'static str {
    if committed {
        "committed"
    } else {
        "aborted"
    }
}
