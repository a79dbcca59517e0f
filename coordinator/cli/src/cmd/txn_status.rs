//! `decree txn-status TXN_ID`: the outcome of a cross-group (2PC) transaction, asked of its
//! coordinator group — e.g. one a client logged as "outcome unknown".
//!
//! The coordinator answers from its decision log. A transaction it has never heard of is
//! *presumed aborted* (REC-4): it records an abort so the transaction can never commit later.
//! A single-group (1PC) transaction never reaches a coordinator, so it always shows as
//! aborted here; read its keys instead.

use clap::Args;
use decree_client::{TxnId, TxnState};
use serde_json::json;

use super::client_opts::{print_json, runtime, ClusterArgs, CmdError};

/// Show whether a transaction committed.
#[derive(Debug, Args)]
pub struct TxnStatusArgs {
    /// The transaction id: 32 hex digits, as `decree txn` and the logs print it.
    pub txn_id: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Parses a transaction id as printed (32 hex digits, optional `0x`).
pub fn parse_txn_id(text: &str) -> Result<TxnId, CmdError> {
    let digits = text.trim().trim_start_matches("0x");
    if digits.is_empty() || digits.len() > 32 {
        return Err(CmdError::Usage(format!("`{text}` is not a transaction id (32 hex digits)")));
    }
    u128::from_str_radix(digits, 16)
        .map(TxnId)
        .map_err(|_| CmdError::Usage(format!("`{text}` is not a transaction id (32 hex digits)")))
}

/// Runs `decree txn-status`.
pub fn run(args: TxnStatusArgs) -> Result<(), CmdError> {
    let txn_id = parse_txn_id(&args.txn_id)?;
    runtime()?.block_on(async {
        let client = args.cluster.connect().await?;
        // A read timestamp of "now": the coordinator never calls it expired (D-5).
        let state = client
            .txn_status_at(txn_id, client.now())
            .await
            .map_err(|e| CmdError::client(format!("asking about {txn_id}"), e))?;
        let (word, detail) = match state {
            TxnState::Committed(info) => ("committed", format!("commit_ts {}", info.commit_ts)),
            TxnState::Aborted { reason } => ("aborted", format!("{reason:?}")),
            TxnState::Pending => ("pending", "not decided yet; ask again".to_string()),
            TxnState::Expired => ("expired", "too old: the outcome is forgotten".to_string()),
        };
        if args.cluster.json {
            print_json(&json!({"txn_id": txn_id.to_string(), "state": word, "detail": detail}));
        } else {
            println!("{txn_id}  {word}  {detail}");
        }
        client.close().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_as_printed_and_garbage_does_not() {
        let id = TxnId(0xdead_beef);
        assert_eq!(parse_txn_id(&id.to_string()).unwrap(), id);
        assert_eq!(parse_txn_id("0xff").unwrap(), TxnId(255));
        assert!(parse_txn_id("xyz").is_err());
        assert!(parse_txn_id(&"f".repeat(33)).is_err());
        assert!(parse_txn_id("").is_err());
    }
}
