//! P-6: a participant votes only after its prepare entry applied. Every `Vote` a node sends
//! for a participant group must find the transaction in that node's replica's `txn_table`
//! when it leaves (the vote is `apply`'s return value, so the entry is there; a vote chosen at
//! admission would leave before it).

use decree_host::Either;
use decree_proto::envelope::Payload;
use decree_proto::txn::VoteReply;
use decree_proto::Response;
use decree_types::NodeId;

use super::Violation;
use crate::bank::{BankEnvelope, BankMachine};

/// Checks the envelopes `node` sent in one iteration (to peers, or delivered to itself)
/// against its replicas' state after it.
pub fn check<'a>(
    node: NodeId,
    sent: &[BankEnvelope],
    machine: impl Fn(decree_types::GroupId) -> Option<&'a BankMachine>,
) -> Result<(), Violation> {
    for envelope in sent {
        let Payload::Response { response: Ok(Response::Vote(VoteReply { txn_id, vote })), .. } =
            &envelope.payload
        else {
            continue;
        };
        let Some(Either::Left(p)) = machine(envelope.group) else { continue };
        if p.state().txn(*txn_id).is_none() {
            return Err(Violation {
                invariant: "P-6 no vote before the prepare entry applied",
                detail: format!(
                    "{node} sent {vote:?} for {txn_id} of {} with no txn_table entry",
                    envelope.group
                ),
            });
        }
    }
    Ok(())
}
