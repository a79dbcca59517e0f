//! Bank conservation, at every audit (TESTING.md "The bank check"): the balances read at one
//! `read_ts` add up to what the bank started with, and none is negative (a snapshot read sees
//! every transfer committed below `read_ts` whole, or not at all: INV-A1 and SI together).

use std::collections::BTreeMap;

use decree_client::bank::Bank;
use decree_types::HlcTimestamp;

use super::Violation;

/// Checks one audit: every account read at `read_ts`, by name.
pub fn check(
    bank: &Bank,
    read_ts: HlcTimestamp,
    balances: &BTreeMap<String, Option<i64>>,
) -> Result<(), Violation> {
    let audit = bank.audit(balances);
    if audit.is_valid() {
        return Ok(());
    }
    Err(Violation {
        invariant: "bank conservation (total conserved, no negative balance)",
        detail: format!("audit at {read_ts}: {audit}"),
    })
}
