//! The replicated log's requests and responses as the client sees them: the one place that
//! knows `decree_host::machines::CommandLog`'s types.

pub use decree_host::machines::{ToyRequest, ToyResponse};

use decree_host::machines::CommandLog;
use decree_proto::ErrorResponse;
use decree_types::{LogIndex, NodeId, Term};

/// What a proposer makes of an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Applied (so a committed entry) at `index`, appended in `term`.
    Applied {
        /// The entry's index.
        index: LogIndex,
        /// The term it was appended in.
        term: Term,
    },
    /// This node does not lead the group; nothing was appended. `hint` is the leader it knows.
    Redirect {
        /// Where to retry.
        hint: Option<NodeId>,
    },
    /// Certainly not applied (refused before appending, or superseded): retry after a pause.
    RetryLater,
    /// The outcome is unknown: it may or may not be applied.
    Unknown(String),
}

/// The request that appends `command` to the log.
pub fn append(command: Vec<u8>) -> ToyRequest {
    ToyRequest::Append(command)
}

/// What a proposer makes of the machine's answer to an append.
pub fn answer(response: ToyResponse) -> Answer {
    match response {
        ToyResponse::Appended { index, term } => Answer::Applied { index, term },
        ToyResponse::NotLeader { leader } => Answer::Redirect { hint: leader },
        // The host lost track of the entry (leadership changed, or it was refused after
        // admission): it may or may not be applied.
        ToyResponse::Unknown => Answer::Unknown("the node lost track of the entry".into()),
        other @ (ToyResponse::Contents { .. }
        | ToyResponse::Written { .. }
        | ToyResponse::Value { .. }
        | ToyResponse::WrongKind) => Answer::Unknown(format!("unexpected {other:?}")),
    }
}

/// What a proposer makes of the host's refusal of an append (the machine never saw it).
pub fn refused(error: ErrorResponse) -> Answer {
    match error {
        ErrorResponse::NotLeader { hint, .. } => Answer::Redirect { hint },
        // Nothing was appended: a full table, or our clock reading ahead of the node's (HLC-3,
        // which passes as the node's clock moves on).
        ErrorResponse::Busy { .. } | ErrorResponse::ClockRejected { .. } => Answer::RetryLater,
        // A stopped node, an unknown group, a request it cannot take: not appended there, but
        // nothing to retry on this node either.
        other => Answer::Unknown(other.to_string()),
    }
}

/// The commands of an encoded replica state (a `CommandLog` snapshot), in log order.
pub fn commands_of_state(state: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let log = CommandLog::decode_snapshot(state).map_err(|e| e.to_string())?;
    Ok(log.commands().iter().map(|(_, command)| command.clone()).collect())
}
