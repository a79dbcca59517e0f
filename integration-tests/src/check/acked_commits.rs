//! Acknowledged commits are never lost, aborted transfers never applied: once every
//! transfer's outcome is known (the clients resolve every unknown one), each account's final
//! balance is exactly its initial balance plus what the committed transfers moved. A commit
//! the client was told of that a participant lost, or an abort that left writes behind, shows
//! up as a balance off from the model.

use std::collections::BTreeMap;

use decree_types::Key;

use super::Violation;
use crate::bank::{Clients, TransferOutcome};

/// Checks the final balances (every account, as applied after healing) against the model.
pub fn check(clients: &Clients, balances: &BTreeMap<Key, i64>) -> Result<(), Violation> {
    let mut model: BTreeMap<Key, i64> = clients
        .bank()
        .accounts()
        .iter()
        .map(|k| (k.clone(), clients.bank().initial_balance()))
        .collect();
    for t in clients.transfers() {
        if t.outcome == TransferOutcome::Committed {
            *model.entry(t.from.clone()).or_default() -= t.transfer.amount;
            *model.entry(t.to.clone()).or_default() += t.transfer.amount;
        }
    }
    for (key, want) in &model {
        let got = balances.get(key).copied();
        if got != Some(*want) {
            let touching: Vec<String> = clients
                .transfers()
                .iter()
                .filter(|t| &t.from == key || &t.to == key)
                .map(|t| format!("{}:{:?}", t.txn_id, t.outcome))
                .collect();
            return Err(Violation {
                invariant: "acknowledged commits are never lost (and aborts change nothing)",
                detail: format!(
                    "{} holds {got:?}, the known outcomes give {want}; transfers: {touching:?}",
                    key.escaped()
                ),
            });
        }
    }
    Ok(())
}
