//! `decree put KEY VALUE`: writes one key in its own transaction (one Raft entry in the key's
//! group: 1PC).

use clap::Args;
use serde_json::json;

use super::client_opts::{print_json, runtime, ClusterArgs, CmdError};

/// Write one key.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The key (UTF-8).
    pub key: String,
    /// The value (UTF-8).
    pub value: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Runs `decree put`.
pub fn run(args: PutArgs) -> Result<(), CmdError> {
    runtime()?.block_on(async {
        let client = args.cluster.connect().await?;
        let (key, value) = (args.key.clone(), args.value.clone());
        let ((), info) = client
            .transact(|txn| {
                let (key, value) = (key.clone(), value.clone());
                async move { txn.put(key, value.into_bytes()) }
            })
            .await
            .map_err(|e| CmdError::client(format!("writing {:?}", args.key), e))?;
        if args.cluster.json {
            print_json(&json!({
                "key": args.key,
                "txn_id": info.txn_id.to_string(),
                "commit_ts": info.commit_ts.to_string(),
            }));
        } else {
            println!("ok  txn {}  commit_ts {}", info.txn_id, info.commit_ts);
        }
        client.close().await;
        Ok(())
    })
}
